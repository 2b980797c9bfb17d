#!/usr/bin/env bash
# JSON:API read throughput and latency with 10,000 requirements loaded: an
# authenticated GET of one requirement and a 20-item page with
# include=persona, next to the same client (wrk, a separate process on the
# same 2 cores) reading the same object and a 20-item page straight from
# kube-apiserver with a ServiceAccount token. Also prints the operator's
# resident memory with the data loaded.
#   bench/api.sh [SECONDS] [REQUIREMENTS]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
seconds=${1:-10}
count=${2:-10000}
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

# The data: 10 personas, and requirements spread over them, created by four
# kubectl processes at once.
data=$(mktemp -d)
python3 - "$data" "$count" <<'PY'
import sys
out, count = sys.argv[1], int(sys.argv[2])
statuses = ["draft", "active", "confirmed", "investigating"]
priorities = ["low", "medium", "high", "critical"]
files = [open(f"{out}/part-{i}.yaml", "w") for i in range(4)]
for p in range(10):
    files[0].write(f"---\napiVersion: catalio.ai/v1\nkind: Persona\nmetadata: {{name: persona-{p}}}\n"
                   f"spec: {{name: Persona {p}, role: Role {p}}}\n")
for r in range(count):
    files[r % 4].write(
        f"---\napiVersion: catalio.ai/v1\nkind: Requirement\nmetadata: {{name: req-{r:05d}}}\n"
        f"spec: {{title: Requirement number {r}, description: Generated for the benchmark,"
        f" status: {statuses[r % 4]}, priority: {priorities[r % 3]}, tags: [bench, t{r % 50}],"
        f" persona: persona-{r % 10}}}\n")
for f in files:
    f.close()
PY
start=$(date +%s)
for i in 0 1 2 3; do
  kubectl -n bench create -f "$data/part-$i.yaml" > /dev/null &
done
wait
echo "loaded $count requirements in $(( $(date +%s) - start ))s" >&2

port=$(free_port); admin=$(free_port)
"$operator" run --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
  --namespace bench --api-rate-limit 0 \
  --token-url "http://127.0.0.1:$port/oauth/token" 2> /tmp/bench-operator-api.log &
pids+=($!)
op_pid=$!
t0=$(date +%s.%N)
wait_ready "$admin"
t1=$(date +%s.%N)
kubectl -n bench wait --for=jsonpath='{.status.phase}'=Active apicred/load --timeout=60s > /dev/null
id=$(kubectl -n bench get secret load -o jsonpath='{.data.client_id}' | base64 -d)
secret=$(kubectl -n bench get secret load -o jsonpath='{.data.client_secret}' | base64 -d)
token=$(curl -s -X POST "http://127.0.0.1:$port/oauth/token" -H 'Content-Type: application/json' \
  -d "{\"client_id\":\"$id\",\"client_secret\":\"$secret\",\"grant_type\":\"client_credentials\"}" \
  | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
sa_token=$(kubectl -n bench create token reader)
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')

# Sanity: every URL answers 200 with what it should, before measuring.
api=http://127.0.0.1:$port/api/v1
total=$(curl -s "$api/requirements?page[size]=1" -g -H "Authorization: Bearer $token" \
  | python3 -c 'import sys, json; print(json.load(sys.stdin)["meta"]["total"])')
[[ $total == "$count" ]] || { echo "the API lists $total requirements, not $count" >&2; exit 1; }

one=req-$(printf '%05d' $((count / 2)))
lua=$(mktemp)
run_case() { # name url bearer
  cat > "$lua" <<LUA
wrk.headers["Authorization"] = "Bearer $3"
wrk.headers["Accept"] = "application/vnd.api+json, application/json"
LUA
  curl -sfk -o /dev/null -H "Authorization: Bearer $3" "$2" || { echo "$1: $2 does not answer 200" >&2; exit 1; }
  wrk -t1 -c$conns -d2s -s "$lua" "$2" > /dev/null
  wrk -t1 -c$conns -d"${seconds}s" --latency -s "$lua" "$2" > /tmp/bench-wrk-api.txt
  printf '%-44s\t%s\n' "$1" "$(wrk_figures /tmp/bench-wrk-api.txt)"
}

printf 'operator ready (10 type watches listed) %.1fs after start; resident memory %s MiB\n\n' \
  "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" "$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$op_pid/status")"
printf '%-44s\t%s\t%s\t%s\t%s\n' "case ($conns connections, ${seconds}s)" "req/s" "p50" "p99" "non-2xx"
run_case "JSON:API GET one requirement" "$api/requirements/$one" "$token"
run_case "kube-apiserver GET the same object" \
  "$server/apis/catalio.ai/v1/namespaces/bench/requirements/$one" "$sa_token"
run_case "JSON:API GET 20 requirements include=persona" "$api/requirements?include=persona" "$token"
run_case "kube-apiserver LIST 20 requirements" \
  "$server/apis/catalio.ai/v1/namespaces/bench/requirements?limit=20" "$sa_token"
run_case "JSON:API GET 20, filter+sort over all $count" \
  "$api/requirements?filter%5Bstatus%5D=active&sort=-priority,title&include=persona" "$token"
printf '\noperator resident memory after the runs: %s MiB\n' \
  "$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$op_pid/status")"
