#!/usr/bin/env bash
# Token endpoint throughput and latency (wrk, 64 connections), RS256 and
# ES256, next to the raw signing rate of this machine and ORY Hydra v2.3.0,
# all measured in this run:
#
# - pinned: the server under test (the operator, Hydra) and `openssl speed`
#   run on the same one CPU, wrk on another: tokens/s against signs/s of
#   that CPU, the fair comparison (the goal: RS256 >= 95%);
#   also against the operator's own `SigningKey::sign` in a loop on that CPU
#   (examples/bench_sign.rs) and its HTTP floor: the rate at which the same
#   server, same wrk, answers a token request refused before any signing
#   (400 unsupported_grant_type). 1 / (1/sign + 1/floor) is the ceiling:
#   what the operator would reach if signing and the round trip cost
#   nothing beyond what each costs alone. A shared host's speed drifts by
#   more than the 5% that separates a good run from a bad one over the
#   minutes a run takes, so the share of the ceiling is also taken in
#   rounds: sign() alone, tokens and the floor, back to back, each round's
#   tokens against its own ceiling, and the median round's share;
#   with perf, also the share of the operator's CPU spent waking wrk, which
#   idles on its own CPU while the server signs: loopback delivers each
#   response, and wakes its reader, on the sender's CPU. The floor run
#   (wrk never idle) barely pays it, openssl never does, and in a VM it is
#   an inter-processor interrupt through the hypervisor; and, per token
#   and per floor answer, what the rest is made of: aws-lc in the server
#   (beside sign() alone: the secret's hash, randomness, and what signing
#   costs amid the network's work), sending, receiving, and the operator's
#   own code;
# - shared: the operator on every CPU with wrk among them, against
#   `openssl speed -multi <CPUs>` (what a 2-core pod with its clients sees).
#
# Fails, saying why, when any response is not 2xx, wrk reports socket
# errors, or a rate (or a ratio of rates) comes out zero or negative; and
# leaves no process behind (the control plane, the operators and Hydra are
# stopped when the script exits, however it exits).
#   bench/token.sh [SECONDS] [--no-hydra | --hydra-only]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
seconds=${1:-20}
hydra=yes operator_cases=yes
[ "${2:-}" = --no-hydra ] && hydra=no
[ "${2:-}" = --hydra-only ] && operator_cases=no
require_wrk
pin_apart
[ "$hydra" = yes ] && hydra_bin=$(bench/hydra-build.sh)
cargo build --release --locked --example bench_sign >&2
bench_sign=$repo/target/release/examples/bench_sign

# Signs per second of one openssl process on the server's CPU, and of
# `-multi` processes on every CPU, from the machine-readable lines (stable
# across OpenSSL 3.0 to 3.5: +F2 is RSA, +F4 ECDSA; sign/s is the 4th field).
openssl_signs() { # rsa2048|ecdsap256 pinned|shared
  local kind=$1 where=$2 line
  local args=(speed -mr -seconds 10 "$kind")
  if [ "$where" = pinned ]; then
    line=$(taskset -c "$server_cpu" openssl "${args[@]}" 2> /dev/null | grep -E '^\+F[24]:')
  else
    line=$(openssl "${args[@]:0:1}" -multi "$cpus" "${args[@]:1}" 2> /dev/null | grep -E '^\+F[24]:')
  fi
  echo "$line" | awk -F: '{printf "%.0f", $4}'
}

lua=$(mktemp)
trap 'rm -f "$lua" "${floor_lua:-}" "${awslc_names:-}"; cleanup' EXIT

# Fails with REASON unless every VALUE is a number above zero: a rate
# of zero, or a ratio computed from one, is a broken run, not a figure.
positive() { # reason value...
  local reason=$1 v
  shift
  for v in "$@"; do
    awk -v v="$v" 'BEGIN {exit !(v ~ /^[0-9.eE+-]+$/ && v + 0 > 0)}' || {
      echo "$reason: got '$v', not a rate above zero" >&2; exit 1; }
  done
}

# One wrk run against URL with the request in $lua; prints tokens/s,
# p50, p99, the server's CPU use and the non-2xx count (always 0),
# tab-separated. Fails on socket errors and on any non-2xx answer (the
# first one's body is in the report): a row with refusals in it measures
# the refusals.
load() { # url pid label
  local url=$1 pid=$2 label=$3 report ticks cpu0 cpu1
  report=$(mktemp)
  taskset -c "$wrk_cpus" wrk -t1 -c64 -d2s -s "$lua" "$url" > /dev/null
  ticks=$(getconf CLK_TCK)
  cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  taskset -c "$wrk_cpus" wrk -t1 -c64 -d"${seconds}s" --latency -s "$lua" "$url" > "$report"
  cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  if grep -q 'Socket errors' "$report" || grep -q 'Non-2xx' "$report"; then
    echo "$label: errors under load:" >&2; cat "$report" >&2; rm -f "$report"; return 1
  fi
  local figures good
  figures=$(wrk_figures "$report")
  good=$(echo "$figures" | cut -f1)
  positive "$label: tokens/s" "$good"
  printf '%s\t%s\t%s\t%s\n' "$good" "$(echo "$figures" | cut -f2-3)" \
    "$(awk -v a="$cpu0" -v b="$cpu1" -v t="$ticks" -v s="$seconds" 'BEGIN {printf "%.2f", (b - a) / t / s}')" \
    "$(echo "$figures" | cut -f4)"
  rm -f "$report"
}

# A token request refused before signing (every answer a 400).
floor_lua=$(mktemp)
cat > "$floor_lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"client_id":"ci_floor","client_secret":"x","grant_type":"password"}'
LUA
# Requests/s of wrk against URL with the request in LUA for SECONDS;
# fails, saying why, on socket errors and, unless `refused` is given
# (every answer meant to be a refusal), on any non-2xx.
rate() { # url lua seconds label [refused]
  local report good
  report=$(taskset -c "$wrk_cpus" wrk -t1 -c64 -d"$3s" -s "$2" "$1")
  if grep -q 'Socket errors' <<< "$report" || { [ "${5:-}" != refused ] && grep -q 'Non-2xx' <<< "$report"; }; then
    echo "$4: errors under load:" >&2; echo "$report" >&2; return 1
  fi
  good=$(awk '/Requests\/sec/ {print $2}' <<< "$report")
  positive "$4" "$good"
  echo "$good"
}

# Requests/s of the server at URL answering the refused request: the cost
# of the round trip alone.
floor() { # url
  rate "$1" "$floor_lua" "$seconds" "HTTP floor" refused
}

# The names of aws-lc's functions, its static ones too (the release
# build's library, by nm): perf's leaf symbol tells them from the
# operator's own code.
awslc_names=$(mktemp)
awslc_lib=$(ls -t target/release/build/aws-lc-sys-*/out/libaws_lc_*crypto.a 2> /dev/null | head -1 || true)
if command -v perf > /dev/null; then
  [ -n "$awslc_lib" ] && { nm "$awslc_lib" 2> /dev/null | awk '$2 ~ /^[tT]$/ {print $3}' | sort -u > "$awslc_names" || true; }
  [ -s "$awslc_names" ] || { echo "needs nm (binutils) and the release build's aws-lc library" >&2; exit 1; }
fi

# Where PID's CPU goes under the load in LUA, by perf's samples: the
# shares (0 to 1) spent waking the reader of a socket it writes to
# (sock_def_readable in the kernel stack), in aws-lc (signing, the
# secret's keyed hash, randomness: its functions at the leaf), sending
# the rest of an answer (writev), receiving (recvfrom), and everything
# else (the operator's own code, other system calls); tab-separated,
# nothing without perf.
profile() { # url pid lua
  command -v perf > /dev/null || return 0
  local data load
  data=$(mktemp)
  taskset -c "$wrk_cpus" wrk -t1 -c64 -d"$((profile_seconds + 1))s" -s "$3" "$1" > /dev/null &
  load=$!
  pids+=("$load")
  perf record -q -F 999 -g -p "$2" -o "$data" -- sleep "$profile_seconds" > /dev/null 2>&1
  wait "$load"
  perf script -i "$data" -F ip,sym 2> /dev/null | awk -v names="$awslc_names" '
    BEGIN { while ((getline name < names) > 0) awslc[name] = 1 }
    function count() {
      if (!n) return
      total++
      if (woke) part["woke"]++
      else if (call ~ /writev|sendmsg|sendto|ksys_write/) part["send"]++
      else if (call ~ /recvfrom|recvmsg|ksys_read/) part["recv"]++
      else if (call == "" && leaf in awslc) part["awslc"]++
      else part["rest"]++
    }
    /^[[:space:]]*$/ { count(); n = 0; woke = 0; call = ""; next }
    { n++; if (n == 1) leaf = $2
      if ($2 ~ /^sock_def_readable/) woke = 1
      if ($2 ~ /^do_syscall_64/) call = previous
      previous = $2 }
    END { count(); if (total) printf "%.4f\t%.4f\t%.4f\t%.4f\t%.4f", part["woke"] / total,
      part["awslc"] / total, part["send"] / total, part["recv"] / total, part["rest"] / total }'
  rm -f "$data"
}
profile_seconds=5

# ROUNDS rounds of sign() alone (2 s), tokens and the floor (SECONDS/2
# each, at least 3 s) on the server's CPU, back to back: their rates as
# `sign,tokens,floor` triples, space-separated.
rounds=5
ceiling_rounds() { # alg url
  local r s t f each=$((seconds / 2 > 3 ? seconds / 2 : 3)) out=()
  for r in $(seq 1 "$rounds"); do
    s=$(taskset -c "$server_cpu" "$bench_sign" "$1" 2)
    positive "SigningKey::sign ($1, in a round)" "$s"
    t=$(rate "$2" "$lua" "$each" "tokens in a round")
    f=$(rate "$2" "$floor_lua" "$each" "HTTP floor in a round" refused)
    out+=("$s,$t,$f")
  done
  echo "${out[*]}"
}

# The operator with ALG on CPUS (a taskset list), its credential in $lua;
# its audit records (a line per token, on stdout by default) go to a file,
# as a container runtime takes them.
operator_case() { # alg cpus
  local alg=$1 on=$2 port admin ns=bench-${1,,}-${RANDOM}
  bench_credential "$ns"
  port=$(free_port); admin=$(free_port)
  taskset -c "$on" "$operator" run --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --namespace "$ns" --watch-namespaces "$ns" --signing-alg "$alg" \
    --token-rate-limit 0 --token-url "http://127.0.0.1:$port/oauth/token" \
    > "/tmp/bench-operator-$alg.audit" 2> "/tmp/bench-operator-$alg.log" &
  local server=$!
  pids+=("$server")
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
  load "http://127.0.0.1:$port/oauth/token" "$server" "operator $alg"
  if [ "$on" = "$server_cpu" ]; then
    floor "http://127.0.0.1:$port/oauth/token"
    ceiling_rounds "$alg" "http://127.0.0.1:$port/oauth/token"
    profile "http://127.0.0.1:$port/oauth/token" "$server" "$lua"
    echo
    profile "http://127.0.0.1:$port/oauth/token" "$server" "$floor_lua"
    echo
  fi
  kill "$server"; wait "$server" 2> /dev/null || true
}

# Hydra (DSN=memory, JWT access tokens) on the server CPU, with a
# client_credentials client; ALG default keeps Hydra's own key (RSA-4096),
# ES256 replaces it with a P-256 key.
hydra_case() { # default|ES256
  local alg=$1 public admin log=/tmp/bench-hydra-$1.log
  public=$(free_port); admin=$(free_port)
  DSN=memory STRATEGIES_ACCESS_TOKEN=jwt SERVE_PUBLIC_PORT=$public SERVE_ADMIN_PORT=$admin \
    SECRETS_SYSTEM=$(openssl rand -hex 16) \
    SERVE_PUBLIC_HOST=127.0.0.1 SERVE_ADMIN_HOST=127.0.0.1 LOG_LEVEL=error \
    URLS_SELF_ISSUER="http://127.0.0.1:$public" \
    taskset -c "$server_cpu" "$hydra_bin" serve all --dev > "$log" 2>&1 &
  pids+=($!)
  local ready=no
  for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$admin/health/ready" > /dev/null && { ready=yes; break; }
    sleep 0.1
  done
  [ "$ready" = yes ] || { echo "hydra $alg never became ready:" >&2; cat "$log" >&2; return 1; }
  local endpoint=http://127.0.0.1:$admin
  if [ "$alg" = ES256 ]; then
    "$hydra_bin" delete jwks hydra.jwt.access-token --endpoint "$endpoint" > /dev/null
    "$hydra_bin" create jwks hydra.jwt.access-token --alg ES256 --use sig --endpoint "$endpoint" > /dev/null
  fi
  local client id secret
  client=$("$hydra_bin" create oauth2-client --endpoint "$endpoint" --grant-type client_credentials \
    --token-endpoint-auth-method client_secret_post --format json)
  id=$(echo "$client" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
  secret=$(echo "$client" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
  # The client must authenticate, three times in a row, before any load:
  # a new client, or a key Hydra creates on first use, may not be there
  # for the first requests, and a load run then measures refusals.
  local body=$log.token status good=0
  for _ in $(seq 1 120); do
    status=$(curl -s -o "$body" -w '%{http_code}' -X POST "http://127.0.0.1:$public/oauth2/token" \
      --data-urlencode grant_type=client_credentials --data-urlencode client_id="$id" \
      --data-urlencode client_secret="$secret")
    if [ "$status" = 200 ]; then good=$((good + 1)); [ "$good" -ge 3 ] && break; else good=0; sleep 0.5; fi
  done
  [ "$good" -ge 3 ] || {
    echo "hydra $alg refused its client before any load ($status): $(head -c 300 "$body")" >&2; return 1; }
  # What that token is signed with (and the RSA key's size).
  local header
  header=$(python3 -c '
import base64, json, sys, urllib.request
b = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
h = json.loads(b(json.load(sys.stdin)["access_token"].split(".")[0]))
keys = json.load(urllib.request.urlopen(sys.argv[1]))["keys"]
k = next(k for k in keys if k["kid"] == h["kid"])
print(h["alg"] + (" (RSA-%d)" % (len(b(k["n"])) * 8) if k["kty"] == "RSA" else " (" + k.get("crv", "") + ")"))
' "http://127.0.0.1:$public/.well-known/jwks.json" < "$body")
  cat > "$lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "$(python3 -c 'import sys, urllib.parse as u; print(u.urlencode({"grant_type": "client_credentials", "client_id": sys.argv[1], "client_secret": sys.argv[2]}))' "$id" "$secret")"
shown = false
response = function(status, headers, body)
  if status ~= 200 and not shown then
    shown = true
    io.stderr:write("hydra answered " .. status .. ": " .. body:sub(1, 300) .. "\n")
  end
end
LUA
  printf '%s\t' "$header"
  load "http://127.0.0.1:$public/oauth2/token" "${pids[-1]}" "hydra $alg"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2> /dev/null || true
}

echo "$cpus CPUs: servers and pinned openssl on CPU $server_cpu, wrk (-t1 -c64) on CPU $wrk_cpus"
echo "one credential / client; the operator's token rate limit off (--token-rate-limit 0)"
rsa1=$(openssl_signs rsa2048 pinned)
ec1=$(openssl_signs ecdsap256 pinned)
rsa_all=$(openssl_signs rsa2048 shared)
ec_all=$(openssl_signs ecdsap256 shared)
positive "openssl speed (rsa2048, ecdsap256; pinned, -multi)" "$rsa1" "$ec1" "$rsa_all" "$ec_all"
printf 'openssl %s: rsa2048 %s signs/s on CPU %s, %s with -multi %s; ecdsap256 %s and %s\n' \
  "$(openssl version | cut -d' ' -f2)" "$rsa1" "$server_cpu" "$rsa_all" "$cpus" "$ec1" "$ec_all"
sign_rs=$(taskset -c "$server_cpu" "$bench_sign" RS256 10)
sign_es=$(taskset -c "$server_cpu" "$bench_sign" ES256 10)
positive "SigningKey::sign (RS256, ES256)" "$sign_rs" "$sign_es"
printf "the operator's SigningKey::sign on CPU %s: RS256 %s signs/s (%s of openssl), ES256 %s (%s)\n\n" \
  "$server_cpu" "$sign_rs" "$(ratio "$sign_rs" "$rsa1")" "$sign_es" "$(ratio "$sign_es" "$ec1")"

printf 'server\tsigns with\ttokens/s\tp50\tp99\tserver CPUs used\tnon-2xx\tof raw signing\n'
row() { # label alg figures raw
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(ratio "$(echo "$3" | cut -f1)" "$4")"
}
# Each case runs in this shell, not in $(...), so the servers it starts are
# in $pids when something fails and the exit trap stops them.
out=$(mktemp)
trap 'rm -f "$lua" "$floor_lua" "$awslc_names" "$out"; cleanup' EXIT
# The pinned row's tokens/s against the ceiling its floor and sign() allow,
# then with the client's wake-up (when perf measured it) added, and where
# a token's CPU went beside a floor answer's: what the rest is made of.
# Fields of the figures: the load's five, the floor, the rounds, then the
# two profiles' five each.
ceiling() { # alg figures-with-floor-rounds-and-profiles sign
  local tokens floor wakes
  tokens=$(echo "$2" | cut -f1); floor=$(echo "$2" | cut -f6); wakes=$(echo "$2" | cut -f8)
  awk -v a="$1" -v t="$tokens" -v f="$floor" -v s="$3" -v w="$wakes" -v rounds="$(echo "$2" | cut -f7)" \
    -v token_parts="$(echo "$2" | cut -f8-12)" -v floor_parts="$(echo "$2" | cut -f13-17)" '
  function breakdown(  i) {
    wake = w * 1e6 / t
    c = 1e6 / (1e6 / s + 1e6 / f + wake)
    printf "    waking wrk took %.1f%% of the operator'"'"'s CPU (perf), %.1f us per token: with it, ceiling %.0f tokens/s; operator %.1f%% of it, %.1f us beyond all three\n",
      100 * w, wake, c, 100 * t / c, 1e6 / t - 1e6 / c
    split(token_parts, p, "\t"); split(floor_parts, q, "\t")
    for (i = 1; i <= 5; i++) { p[i] *= 1e6 / t; q[i] *= 1e6 / f }
    printf "    per token (perf; us, a floor answer'"'"'s beside it): aws-lc %.1f (sign() alone %.1f), sending %.1f (%.1f), waking wrk %.1f (%.1f), receiving %.1f (%.1f), the operator'"'"'s own code and the rest %.1f (%.1f)\n",
      p[2], 1e6 / s, p[3], q[3], p[1], q[1], p[4], q[4], p[5], q[5] }
  BEGIN {
    c = 1 / (1 / s + 1 / f)
    printf "  %s: HTTP floor %.0f requests/s (%.1f us each), sign() %.1f us: ceiling %.0f tokens/s; operator %.1f%% of it, %.1f us per token beyond both\n",
      a, f, 1e6 / f, 1e6 / s, c, 100 * t / c, 1e6 / t - 1e6 / c
    if (w == "") print "    (no perf here: the client wake-ups were not measured)"
    else breakdown()
    # Each round: its tokens against the ceiling of its own sign() and
    # floor (and the wake-ups, per token at its rate), then the median.
    n = split(rounds, r, " ")
    line = ""
    for (i = 1; i <= n; i++) {
      split(r[i], x, ",")
      per = 1e6 / x[1] + 1e6 / x[3] + (w == "" ? 0 : w * 1e6 / x[2])
      share[i] = 100 * x[2] * per / 1e6
      line = line sprintf(" %.1f%% (%.0f of %.0f)", share[i], x[2], 1e6 / per)
    }
    for (i = 2; i <= n; i++) for (j = i; j > 1 && share[j - 1] > share[j]; j--) {
      v = share[j]; share[j] = share[j - 1]; share[j - 1] = v }
    median = n % 2 ? share[(n + 1) / 2] : (share[n / 2] + share[n / 2 + 1]) / 2
    printf "    in %d rounds of sign() alone, tokens and the floor back to back, tokens/s against each round'"'"'s own ceiling%s:%s; median %.1f%%\n",
      n, w == "" ? "" : " (with the wake-up)", line, median
  }'
}
if [ "$operator_cases" = yes ]; then
  operator_case RS256 "$server_cpu" > "$out"; rs=$(tr '\n' '\t' < "$out"); row "operator, pinned" RS256 "$(echo "$rs" | cut -f1-5)" "$rsa1"
  operator_case ES256 "$server_cpu" > "$out"; es=$(tr '\n' '\t' < "$out"); row "operator, pinned" ES256 "$(echo "$es" | cut -f1-5)" "$ec1"
  operator_case RS256 "0-$server_cpu" > "$out"; rs2=$(< "$out"); row "operator, shared" RS256 "$rs2" "$rsa_all"
  operator_case ES256 "0-$server_cpu" > "$out"; es2=$(< "$out"); row "operator, shared" ES256 "$es2" "$ec_all"
  echo
  echo "pinned, against the operator's own parts on CPU $server_cpu:"
  ceiling RS256 "$rs" "$sign_rs"
  ceiling ES256 "$es" "$sign_es"
fi
if [ "$hydra" = yes ]; then
  hydra_case default > "$out"; h=$(< "$out"); printf 'hydra, pinned\t%s\n' "$h"
  hydra_case ES256 > "$out"; h2=$(< "$out"); printf 'hydra ES256, pinned\t%s\n' "$h2"
  echo
  [ "$operator_cases" = yes ] || exit 0
  positive "the ratios' rates" "$(echo "$rs" | cut -f1)" "$(echo "$h" | cut -f2)" \
    "$(echo "$es" | cut -f1)" "$(echo "$h2" | cut -f2)"
  awk -v o="$(echo "$rs" | cut -f1)" -v h="$(echo "$h" | cut -f2)" \
    'BEGIN {printf "operator RS256 / Hydra defaults (RSA-4096, PBKDF2): %.0fx\n", o / h}'
  awk -v o="$(echo "$es" | cut -f1)" -v h="$(echo "$h2" | cut -f2)" \
    'BEGIN {printf "operator ES256 / Hydra ES256: %.0fx\n", o / h}'
fi
