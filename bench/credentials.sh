#!/usr/bin/env bash
# Credentials at the API server's pace, measured in one run:
# 1. baseline: a plain client (examples/bench_writes.rs, 32 requests in
#    flight) makes, for N credentials, the writes the operator makes for
#    each: the ApiCredential, its Secret, its status and an event;
# 2. the operator: the same client creates N ApiCredentials, and the time
#    runs until all of them are Active
#    (awaited through one watch); its API writes are counted from
#    kube-apiserver's apiserver_request_total;
# 3. change to effect: for CHANGES credentials, one at a time, the time
#    from the answer to `patch` (a rotation without grace for half of them,
#    a revocation for the other half) to the token endpoint refusing the old
#    secret; p50 and p99.
# Also the controller's memory once every credential is Active.
# The goals: operator / baseline <= 1.25, p99 < 500 ms.
#   bench/credentials.sh [N] [CHANGES]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
n=${1:-1000}
changes=${2:-200}
cargo build --release --locked --example bench_writes >&2
client=$repo/target/release/examples/bench_writes

reads() { # GETs of Secrets (the controller reads a credential's Secret before it plans)
  kubectl get --raw /metrics | awk '
    /^apiserver_request_total\{/ && /verb="GET"/ && /resource="secrets"/ {s += $NF} END {printf "%d", s}'
}
writes() { # total write requests to what the operator writes
  kubectl get --raw /metrics | awk '
    /^apiserver_request_total\{/ && /verb="(POST|PUT|PATCH|APPLY|DELETE)"/ {
      if ($0 ~ /resource="secrets"/ || $0 ~ /resource="events"/ ||
          ($0 ~ /resource="apicredentials"/ && $0 ~ /subresource="status"/)) s += $NF
    }
    END { printf "%d", s }'
}
# One watch, not kubectl wait: that waits object by object, each request
# under kubectl's client-side rate limit, and would measure itself.
all_active() { # namespace count
  timeout 600 "$client" wait "$1" "$2"
}

kubectl create namespace bench-baseline > /dev/null
baseline=$("$client" baseline bench-baseline "$n")

kubectl create namespace bench > /dev/null
admin=$(free_port)
"$operator" controller --watch-namespaces bench --namespace bench \
  --admin-listen "127.0.0.1:$admin" > /tmp/bench-controller.audit 2> /tmp/bench-controller.log &
pids+=($!)
wait_ready "$admin"
before=$(writes); reads_before=$(reads)
start=$(date +%s.%N)
created=$("$client" create bench "$n")
all_active bench "$n"
ready=$(date +%s.%N)
# Every credential is Active; its event may still be on its way. Wait until
# the count of writes stops moving (two equal readings 1 s apart).
after=$(writes)
while sleep 1; now=$(writes); [ "$now" != "$after" ]; do after=$now; done
reads_after=$(reads)
sleep 2 # freed pages go back within a second (jemalloc's background thread)
memory="$(rss "${pids[-1]}") MiB resident, peak $(rss "${pids[-1]}" peak) MiB"
kill "${pids[-1]}"; wait "${pids[-1]}" 2> /dev/null || true

awk -v n="$n" -v g=$((reads_after - reads_before)) -v b="$baseline" -v c="$created" -v s="$start" -v r="$ready" -v w=$((after - before)) 'BEGIN {
  printf "credentials: %d, 32 requests in flight\n", n
  printf "baseline, a plain client making each credential'"'"'s 4 writes: %.2fs (%.0f credentials/s)\n", b, n / b
  printf "operator: created in %.2fs, all Active %.2fs after the first create (%.0f credentials/s)\n", c, r - s, n / (r - s)
  printf "operator / baseline: %.2fx (goal <= 1.25x)\n", (r - s) / b
  printf "API writes by the operator: %d (%.2f per credential: Secret, status, event)\n", w, w / n
  printf "Secret reads by the operator: %d (%.2f per credential)\n", g, g / n
}'
echo "the controller with $n credentials Active: $memory"

# Change to effect, with the whole operator (controller and token endpoint).
kubectl create namespace bench-latency > /dev/null
port=$(free_port); admin=$(free_port)
"$operator" run --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
  --namespace bench-latency --watch-namespaces bench-latency --token-rate-limit 0 \
  --token-url "http://127.0.0.1:$port/oauth/token" > /tmp/bench-latency.audit 2> /tmp/bench-latency.log &
pids+=($!)
wait_ready "$admin"
"$client" create bench-latency "$changes" > /dev/null
all_active bench-latency "$changes"
"$client" latency "http://127.0.0.1:$port" bench-latency "$changes" > /tmp/bench-latency.txt
for kind in rotate revoke all; do
  awk -v k="$kind" '$1 == k || k == "all" {print $2}' /tmp/bench-latency.txt | sort -n | awk -v k="$kind" '
    {v[NR] = $1} END {
      i50 = int((NR - 1) * 0.50) + 1; i99 = int((NR - 1) * 0.99) + 1
      printf "patch to token endpoint refusing the old secret, %s (%d): p50 %.0f ms, p99 %.0f ms (goal < 500), max %.0f ms\n",
        k, NR, v[i50], v[i99], v[NR]
    }'
done
