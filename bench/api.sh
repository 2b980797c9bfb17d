#!/usr/bin/env bash
# JSON:API read throughput and latency, and what a replica holds in memory.
#
# With REQUIREMENTS (10,000) loaded: an authenticated GET of one requirement,
# a 20-item page with include=persona and a filtered, sorted page, next to
# the same client (wrk, a separate process on the same 2 cores) reading the
# same object and a 20-item list from kube-apiserver with a ServiceAccount
# token, from etcd and from its watch cache (resourceVersion=0). Then the
# two paged cases at 1,000, REQUIREMENTS and LARGE (100,000) requirements:
# a page should cost the same whatever the collection. Then the resident
# memory of a server replica (`catalio-operator server`) started with
# CREDENTIALS (10,000) ApiCredentials and REQUIREMENTS, and with LARGE.
# Last, the index alone in process (examples/bench_index.rs).
#   bench/api.sh [SECONDS] [REQUIREMENTS] [LARGE] [CREDENTIALS]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
seconds=${1:-10}
count=${2:-10000}
large=${3:-100000}
creds=${4:-10000}
conns=32
require_wrk
bench_credential
kubectl -n bench apply -f - > /dev/null <<YAML
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader}
rules:
  - apiGroups: [catalio.ai]
    resources: [requirements, personas]
    verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects: [{kind: ServiceAccount, name: reader, namespace: bench}]
YAML

data=$(mktemp -d)
# Requirements [from, to) spread over 10 personas (created with the first
# range), created by four kubectl processes at once.
load() { # from to
  python3 - "$data" "$1" "$2" <<'PY'
import sys
out, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
statuses = ["draft", "active", "confirmed", "investigating"]
priorities = ["low", "medium", "high", "critical"]
files = [open(f"{out}/part-{i}.yaml", "w") for i in range(4)]
if start == 0:
    for p in range(10):
        files[0].write(f"---\napiVersion: catalio.ai/v1\nkind: Persona\nmetadata: {{name: persona-{p}}}\n"
                       f"spec: {{name: Persona {p}, role: Role {p}}}\n")
for r in range(start, end):
    files[r % 4].write(
        f"---\napiVersion: catalio.ai/v1\nkind: Requirement\nmetadata: {{name: req-{r:06d}}}\n"
        f"spec: {{title: Requirement number {r}, description: Generated for the benchmark,"
        f" status: {statuses[r % 4]}, priority: {priorities[r % 3]}, tags: [bench, t{r % 50}],"
        f" persona: persona-{r % 10}}}\n")
for f in files:
    f.close()
PY
  local start creating=()
  start=$(date +%s)
  for i in 0 1 2 3; do
    kubectl -n bench create -f "$data/part-$i.yaml" > /dev/null &
    creating+=($!)
  done
  wait "${creating[@]}"
  echo "loaded requirements $1..$2 in $(( $(date +%s) - start ))s" >&2
}


# Starts a server replica with the default limits and waits until it is
# ready; sets replica_pid and replica_api.
replica() {
  local port admin
  port=$(free_port); admin=$(free_port)
  "$operator" server --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --namespace bench > /tmp/bench-replica-api.audit 2>> /tmp/bench-replica-api.log &
  replica_pid=$!
  pids+=("$replica_pid")
  replica_api=http://127.0.0.1:$port/api/v1
  wait_ready "$admin"
}

load 0 1000
port=$(free_port); admin=$(free_port)
"$operator" run --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
  --namespace bench --api-rate-limit 0 \
  --token-url "http://127.0.0.1:$port/oauth/token" > /tmp/bench-operator-api.audit 2> /tmp/bench-operator-api.log &
pids+=($!)
op_pid=$!
wait_ready "$admin"
kubectl -n bench wait --for=jsonpath='{.status.phase}'=Active apicred/load --timeout=60s > /dev/null
id=$(kubectl -n bench get secret load -o jsonpath='{.data.client_id}' | base64 -d)
secret=$(kubectl -n bench get secret load -o jsonpath='{.data.client_secret}' | base64 -d)
token=$(curl -s -X POST "http://127.0.0.1:$port/oauth/token" -H 'Content-Type: application/json' \
  -d "{\"client_id\":\"$id\",\"client_secret\":\"$secret\",\"grant_type\":\"client_credentials\"}" \
  | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
sa_token=$(kubectl -n bench create token reader)
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
api=http://127.0.0.1:$port/api/v1
kube=$server/apis/catalio.ai/v1/namespaces/bench/requirements

# Waits until the JSON:API at $1 lists $2 requirements.
await_total() { # api-base count
  for _ in $(seq 1 600); do
    local total
    total=$(curl -s "$1/requirements?page[size]=1" -g -H "Authorization: Bearer $token" \
      | python3 -c 'import sys, json; print(json.load(sys.stdin)["meta"]["total"])' 2> /dev/null || true)
    [[ $total == "$2" ]] && return 0
    sleep 0.5
  done
  echo "the API at $1 never listed $2 requirements" >&2; exit 1
}

lua=$(mktemp)
# One wrk run with CONNS connections (default $conns) and wrk's 2 s
# timeout unless given; fails on socket errors (timeouts too), on a rate
# that is not positive, and on any non-2xx unless LIMITED (the row that
# shows the default rate limit at work counts its 429s).
run_case() { # name url bearer [limited] [conns timeout]
  local c=${5:-$conns} timeout=${6:-2s} figures
  cat > "$lua" <<LUA
wrk.headers["Authorization"] = "Bearer $3"
wrk.headers["Accept"] = "application/vnd.api+json, application/json"
LUA
  curl -sfk -o /dev/null -H "Authorization: Bearer $3" "$2" || { echo "$1: $2 does not answer 200" >&2; exit 1; }
  wrk -t1 -c"$c" -d2s --timeout "$timeout" -s "$lua" "$2" > /dev/null
  wrk -t1 -c"$c" -d"${seconds}s" --timeout "$timeout" --latency -s "$lua" "$2" > /tmp/bench-wrk-api.txt
  if grep -q 'Socket errors' /tmp/bench-wrk-api.txt || { [ -z "${4:-}" ] && grep -q 'Non-2xx' /tmp/bench-wrk-api.txt; }; then
    echo "$1: errors under load:" >&2; cat /tmp/bench-wrk-api.txt >&2; exit 1
  fi
  figures=$(wrk_figures /tmp/bench-wrk-api.txt)
  awk -v r="$(echo "$figures" | cut -f1)" 'BEGIN {exit !(r > 0)}' ||
    { echo "$1: no request completed:" >&2; cat /tmp/bench-wrk-api.txt >&2; exit 1; }
  printf '%-52s\t%s\n' "$1" "$figures"
}
header() { printf '%-52s\t%s\t%s\t%s\t%s\n' "$1" "req/s" "p50" "p99" "non-2xx"; }
include_page="requirements?include=persona"
sorted_page="requirements?filter%5Bstatus%5D=active&sort=-priority,title&include=persona"
paged_cases() { # size
  run_case "JSON:API 20 include=persona, of $1" "$api/$include_page" "$token"
  run_case "JSON:API 20 filter+sort+include, of $1" "$api/$sorted_page" "$token"
}

echo "Rate limits: the JSON:API's per-organization limit is off (--api-rate-limit 0)"
echo "except in the row that says otherwise; kube-apiserver runs with its defaults"
echo "(API Priority and Fairness, --max-requests-inflight 400)."
echo
header "A page's cost by collection size ($conns connections, ${seconds}s)"
await_total "$api" 1000
paged_cases 1000
if (( count > 1000 )); then
  load 1000 "$count"
  await_total "$api" "$count"
  paged_cases "$count"
fi

echo
replica
await_total "$replica_api" "$count"
one=req-$(printf '%06d' $((count / 2)))
header "With $count requirements ($conns connections, ${seconds}s)"
run_case "JSON:API GET one requirement" "$api/requirements/$one" "$token"
run_case "JSON:API GET one, default rate limit (100/s, burst 200)" \
  "$replica_api/requirements/$one" "$token" limited
run_case "kube-apiserver GET the same object (etcd)" "$kube/$one" "$sa_token"
run_case "kube-apiserver GET it from cache (resourceVersion=0)" "$kube/$one?resourceVersion=0" "$sa_token"
run_case "JSON:API GET 20 requirements include=persona" "$api/$include_page" "$token"
run_case "kube-apiserver LIST 20 (limit=20, etcd)" "$kube?limit=20" "$sa_token"
# Each answer is every object (megabytes): 2 connections, 60 s to answer.
run_case "kube-apiserver LIST from cache (rv=0: all $count; 2 conns)" \
  "$kube?limit=20&resourceVersion=0" "$sa_token" "" 2 60s
run_case "JSON:API GET 20, filter+sort over all $count" "$api/$sorted_page" "$token"
kill "$replica_pid"

echo
manifest=$(mktemp)
for i in $(seq 1 "$creds"); do
  printf -- '---\napiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {name: cred-%d}\nspec: {displayName: "Credential %d"}\n' "$i" "$i"
done > "$manifest"
(( creds == 0 )) || kubectl -n bench apply --server-side -f "$manifest" > /dev/null
until [ "$(kubectl -n bench get apicred -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c '^Active$')" -gt "$creds" ]; do
  sleep 1
done
replica
await_total "$replica_api" "$count"
sleep 2 # freed pages go back within a second (jemalloc's background thread)
printf 'server replica resident memory, %s credentials and %s requirements: %s MiB\n' \
  "$((creds + 1))" "$count" "$(rss "$replica_pid")"
printf 'run (controller and server) resident memory after the runs above: %s MiB\n' "$(rss "$op_pid")"
kill "$replica_pid"

if (( large > count )); then
  echo
  load "$count" "$large"
  await_total "$api" "$large"
  header "A page's cost by collection size, continued"
  paged_cases "$large"
  replica
  await_total "$replica_api" "$large"
  sleep 2
  printf 'server replica resident memory, %s credentials and %s requirements: %s MiB\n' \
    "$((creds + 1))" "$large" "$(rss "$replica_pid")"
fi

# The index alone, without HTTP or the API server: what grows with the
# collection shows here apart from the round trip.
echo
echo "the index in process (examples/bench_index.rs, one thread): memory per requirement, a page's cost"
cargo build --release --locked --example bench_index >&2
sizes=(1000 "$count")
(( large > count )) && sizes+=("$large")
"$repo/target/release/examples/bench_index" "${sizes[@]}"
