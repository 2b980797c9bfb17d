#!/usr/bin/env bash
# Clients without a secret, and tokens a thief cannot replay, each against
# what it replaces, in one run (the operator signing with ES256, no rate
# limits, pinned to one CPU; wrk, 32 connections, on the others, so that
# the difference of two rows' 1/rate is the server's CPU time per request):
#
# - tokens per second with a client secret (client_secret_post), with
#   private_key_jwt (an ES256 client assertion), and with a federated
#   assertion (an outside issuer's RS256 token, as GitHub Actions and
#   Kubernetes sign them, its keys given inline: always cached);
# - JSON:API GET of one object with a Bearer token, and with a DPoP-bound
#   token and a DPoP proof (ES256) per request.
#
# Assertions and proofs carry an id the server takes once, so each request
# needs its own: they are signed before the run (examples/bench_jwts.rs,
# as many as the matching secret or Bearer row could use) and wrk sends
# each once; running out, or any answer that is not 2xx, fails the script.
# Then the gaps are set against what each check costs in process.
#   bench/clients.sh [SECONDS]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
seconds=${1:-10}
conns=32
require_wrk
pin_apart
cargo build --release --locked --example bench_jwts >&2
jwts=$repo/target/release/examples/bench_jwts
work=$(mktemp -d)
trap 'rm -rf "$work"; cleanup' EXIT

"$jwts" key ES256 > "$work/client.json"
"$jwts" key RS256 > "$work/outside.json"
"$jwts" key ES256 > "$work/holder.json"
outside_iss=https://ci.bench.example
subject=repo:my-org/app:ref:refs/heads/main
cat > "$work/issuers.json" <<JSON
{"issuers": [{"name": "ci", "issuer": "$outside_iss", "audiences": ["https://catalio.ai"],
  "jwks": {"keys": [$("$jwts" jwk "$work/outside.json")]}}]}
JSON

bench_credential
kubectl -n bench apply -f - > /dev/null <<YAML
apiVersion: catalio.ai/v1
kind: ApiCredential
metadata: {name: keyed}
spec:
  displayName: Holds a key
  scopes: ["*:read"]
  clientSecret: Disabled
  clientKeys: {keys: [$("$jwts" jwk "$work/client.json")]}
---
apiVersion: catalio.ai/v1
kind: ApiCredential
metadata: {name: federated}
spec:
  displayName: Outside pipeline
  scopes: ["*:read"]
  clientSecret: Disabled
  federation: [{issuer: ci, subject: "$subject"}]
---
apiVersion: catalio.ai/v1
kind: Requirement
metadata: {name: one}
spec: {title: The one requirement}
YAML

port=$(free_port); admin=$(free_port)
base=http://127.0.0.1:$port
taskset -c "$server_cpu" "$operator" run --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
  --namespace bench --signing-alg ES256 --api-rate-limit 0 --token-rate-limit 0 \
  --token-url "$base/oauth/token" --trusted-issuers "$work/issuers.json" --audit-log off \
  > /dev/null 2>> /tmp/bench-operator-clients.log &
pids+=($!)
wait_ready "$admin"
kubectl -n bench wait --for=jsonpath='{.status.phase}'=Active \
  apicred/load apicred/keyed apicred/federated --timeout=60s > /dev/null
id=$(kubectl -n bench get secret load -o jsonpath='{.data.client_id}' | base64 -d)
secret=$(kubectl -n bench get secret load -o jsonpath='{.data.client_secret}' | base64 -d)
keyed_id=$(kubectl -n bench get apicred keyed -o jsonpath='{.status.clientId}')
assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer

# POSTs BODY (form fields, urlencoded) to the token endpoint, with a DPoP
# proof when given; prints the access token, or fails with the answer.
token() { # body [proof]
  local answer
  answer=$(curl -s -X POST "$base/oauth/token" ${2:+-H "DPoP: $2"} --data "$1")
  case $answer in
    *'"access_token":"'*) echo "$answer" | sed -E 's/.*"access_token":"([^"]+)".*/\1/' ;;
    *) echo "token request refused: $answer" >&2; return 1 ;;
  esac
}
secret_body="grant_type=client_credentials&client_id=$id&client_secret=$secret"
# The operator reads the index as it fills: wait for each client to work.
until token "$secret_body" > /dev/null 2>&1; do sleep 0.2; done
until token "grant_type=client_credentials&client_assertion_type=$assertion_type&client_assertion=$(
  "$jwts" assertion "$work/client.json" "$keyed_id" "$base/oauth/token" 1)" > /dev/null 2>&1; do
  sleep 0.2
done
outside_token=$("$jwts" outside "$work/outside.json" "$outside_iss" "$subject" https://catalio.ai)
federated_body="grant_type=client_credentials&client_assertion_type=$assertion_type&client_assertion=$outside_token"
token "$federated_body" > /dev/null

# wrk sends, per request, the next line of $work/lines as HEADER (or as the
# form field of that name when HEADER starts with "form:"), with FIXED (a
# Lua table of headers) and BODY; past the last line it sends an empty one,
# which the server refuses, and the non-2xx answers fail the row.
lua=$work/case.lua
script() { # method header fixed body
  cat > "$lua" <<LUA
local lines, n = {}, 0
local file = io.open("$work/lines")
if file then for line in file:lines() do lines[#lines + 1] = line end file:close() end
local fixed = $3
request = function()
  n = n + 1
  local headers, body, value = {}, "$4", lines[n] or ""
  for k, v in pairs(fixed) do headers[k] = v end
  if "$2" == "" then
  elseif string.sub("$2", 1, 5) == "form:" then
    body = body .. "&" .. string.sub("$2", 6) .. "=" .. value
  else
    headers["$2"] = value
  end
  return wrk.format("$1", nil, headers, body)
end
LUA
}

header() { printf '%-52s\t%s\t%s\t%s\t%s\n' "$1" "req/s" "p50" "p99" "non-2xx"; }
# Runs wrk with $lua at URL for the run's length (no warm-up: each line
# goes once); prints the row and sets rate.
run_case() { # name url
  taskset -c "$wrk_cpus" wrk -t1 -c$conns -d"${seconds}s" --latency -s "$lua" "$2" > "$work/wrk.txt"
  checked_row "$1" "$work/wrk.txt"
}
# Lines for a row at most as fast as RATE, with a margin.
enough() { awk -v r="$1" -v s="$seconds" 'BEGIN {printf "%d", r * s * 1.5 + 1000}'; }
# Microseconds per request between two rates.
gap() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", 1e6 / a - 1e6 / b}'; }
form='{["Content-Type"] = "application/x-www-form-urlencoded"}'

header "Tokens by way of authenticating ($conns connections, ${seconds}s)"
: > "$work/lines"
script POST "" "$form" "$secret_body"
run_case "client secret (client_secret_post)" "$base/oauth/token"
by_secret=$rate
"$jwts" assertion "$work/client.json" "$keyed_id" "$base/oauth/token" "$(enough "$by_secret")" \
  > "$work/lines"
script POST form:client_assertion "$form" \
  "grant_type=client_credentials&client_assertion_type=$assertion_type"
run_case "private_key_jwt (ES256 assertion, one per request)" "$base/oauth/token"
by_key=$rate
: > "$work/lines"
script POST "" "$form" "$federated_body"
run_case "federated assertion (RS256, keys cached)" "$base/oauth/token"
by_federation=$rate

echo
header "JSON:API GET one requirement ($conns connections, ${seconds}s)"
bearer=$(token "$secret_body")
: > "$work/lines"
script GET "" "{[\"Accept\"] = \"application/vnd.api+json\", [\"Authorization\"] = \"Bearer $bearer\"}" ""
run_case "Bearer token" "$base/api/v1/requirements/one"
by_bearer=$rate
one=$base/api/v1/requirements/one
bound=$(token "$secret_body" "$("$jwts" proof "$work/holder.json" POST "$base/oauth/token" - 1)")
"$jwts" proof "$work/holder.json" GET "$one" "$bound" "$(enough "$by_bearer")" > "$work/lines"
script GET DPoP "{[\"Accept\"] = \"application/vnd.api+json\", [\"Authorization\"] = \"DPoP $bound\"}" ""
run_case "DPoP-bound token, a proof per request (ES256)" "$one"
by_proof=$rate

echo
printf '%-52s\t%s\t%s\n' "Against the secret or Bearer row" "share" "server µs more per request"
printf '%-52s\t%s\t%s\n' "private_key_jwt" "$(ratio "$by_key" "$by_secret")" "$(gap "$by_key" "$by_secret")"
printf '%-52s\t%s\t%s\n' "federated assertion" "$(ratio "$by_federation" "$by_secret")" \
  "$(gap "$by_federation" "$by_secret")"
printf '%-52s\t%s\t%s\n' "DPoP" "$(ratio "$by_proof" "$by_bearer")" "$(gap "$by_proof" "$by_bearer")"
echo
echo "What the checks cost in process (one thread on CPU $server_cpu, µs):"
taskset -c "$server_cpu" "$jwts" cost 2 | awk -F'\t' '{printf "  %-50s\t%s\n", $1, $2}'
# The reference: verifications per second of openssl on the same CPU.
openssl_verify() { # ecdsap256|rsa2048
  taskset -c "$server_cpu" openssl speed -mr -seconds 5 "$1" 2> /dev/null |
    awk -F: '/^\+F[24]:/ {printf "%.1f", 1e6 / $5}'
}
es_verify=$(openssl_verify ecdsap256); rs_verify=$(openssl_verify rsa2048)
awk -v e="$es_verify" -v r="$rs_verify" 'BEGIN {exit !(e > 0 && r > 0)}' ||
  { echo "openssl speed gave no verify rate" >&2; exit 1; }
printf '  %-50s\t%s\n' "openssl $(openssl version | cut -d' ' -f2) ECDSA P-256 verify" "$es_verify" \
  "openssl RSA-2048 verify" "$rs_verify"
