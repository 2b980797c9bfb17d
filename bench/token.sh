#!/usr/bin/env bash
# Token endpoint throughput and latency at 64 concurrent connections, with
# RS256 and ES256, next to the raw signing rate of this machine measured in
# the same run (`openssl speed -multi 2`). Load comes from wrk, a separate
# process on the same 2 cores.
#   bench/token.sh [SECONDS]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
seconds=${1:-20}
require_wrk

lua=$(mktemp)
run_case() { # alg
  # Each algorithm runs as its own installation (its own key Secret, so its
  # own hash key) in a namespace of its own: two installations on one
  # namespace would each regenerate the secrets the other sealed.
  local alg=$1 port admin ns=bench-${1,,}
  bench_credential "$ns"
  port=$(free_port); admin=$(free_port)
  "$operator" run --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --namespace "$ns" --watch-namespaces "$ns" --signing-alg "$alg" \
    --token-rate-limit 0 --token-url "http://127.0.0.1:$port/oauth/token" 2> "/tmp/bench-operator-$alg.log" &
  pids+=($!)
  wait_ready "$admin"
  kubectl -n "$ns" wait --for=jsonpath='{.status.phase}'=Active apicred/load --timeout=60s > /dev/null
  local id secret
  id=$(kubectl -n "$ns" get secret load -o jsonpath='{.data.client_id}' | base64 -d)
  secret=$(kubectl -n "$ns" get secret load -o jsonpath='{.data.client_secret}' | base64 -d)
  cat > "$lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"client_id":"$id","client_secret":"$secret","audience":"https://catalio.ai/api/v1","grant_type":"client_credentials"}'
LUA
  # Warm up, then measure, reading the operator's own CPU time around the
  # run (utime + stime, in clock ticks).
  wrk -t1 -c64 -d2s -s "$lua" "http://127.0.0.1:$port/oauth/token" > /dev/null
  local pid=${pids[-1]} ticks cpu0 cpu1
  ticks=$(getconf CLK_TCK)
  cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  wrk -t1 -c64 -d"${seconds}s" --latency -s "$lua" "http://127.0.0.1:$port/oauth/token" > "/tmp/bench-wrk-$alg.txt"
  cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
  local cores
  cores=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$ticks" -v s="$seconds" 'BEGIN {printf "%.2f", (b - a) / t / s}')
  printf '%s\t%s\t%s\n' "$alg" "$(wrk_figures "/tmp/bench-wrk-$alg.txt")" "$cores"
}

echo "one credential, its token rate limit off for the run (--token-rate-limit 0)"
echo "raw signing rate on this machine (openssl speed -multi 2, 10s each):"
rsa=$(openssl speed -multi 2 -seconds 10 rsa2048 2>/dev/null | awk '/^rsa 2048 bits/ {print $6}')
ec=$(openssl speed -multi 2 -seconds 10 ecdsap256 2>/dev/null | awk '/ecdsa \(nistp256\)/ {print $7}')
printf '  rsa2048 signs/s: %s\n  ecdsap256 signs/s: %s\n' "$rsa" "$ec"
echo
printf 'alg\ttokens/s\tp50\tp99\tnon-2xx\toperator cores\n'
rs=$(run_case RS256); echo "$rs"
es=$(run_case ES256); echo "$es"
echo
awk -v t="$(echo "$rs" | cut -f2)" -v r="$rsa" 'BEGIN {printf "RS256 tokens/s as a share of openssl rsa2048 signs/s: %.0f%%\n", 100*t/r}'
awk -v t="$(echo "$rs" | cut -f2)" -v c="$(echo "$rs" | cut -f6)" -v r="$rsa" \
  'BEGIN {printf "RS256 tokens per operator core-second: %.0f (openssl per core: %.0f)\n", t/c, r/2}'
awk -v t="$(echo "$es" | cut -f2)" -v r="$ec" 'BEGIN {printf "ES256 tokens/s as a share of openssl ecdsap256 signs/s: %.0f%%\n", 100*t/r}'
