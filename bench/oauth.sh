#!/usr/bin/env bash
# The OAuth endpoints beside the token endpoint, in one run (wrk, 32
# connections, the operator with ES256 keys and no rate limits):
#
# - introspections per second (RFC 7662, the caller a credential with
#   introspection: true, HTTP Basic) next to a JSON:API GET of one object
#   with the same token: both look the token up in the index once its
#   signature is cached (the goal: introspection >= 80% of GET one);
# - tokens per second with the audit trail's webhook healthy (a local sink
#   that answers 204 at once), black-holed (a sink that accepts connections
#   and never answers), and with no audit at all: a webhook that is down
#   must not slow the token endpoint (the goal: black-holed within 5% of
#   healthy).
#
# Fails when any response is not 2xx or a rate is not positive.
#   bench/oauth.sh [SECONDS]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
seconds=${1:-10}
conns=32
require_wrk
cargo build --release --locked --example audit_sink >&2
sink=$repo/target/release/examples/audit_sink

bench_credential
kubectl -n bench apply -f - > /dev/null <<YAML
apiVersion: catalio.ai/v1
kind: ApiCredential
metadata: {name: gateway}
spec: {displayName: Gateway, scopes: ["requirement:read"], introspection: true}
---
apiVersion: catalio.ai/v1
kind: Requirement
metadata: {name: one}
spec: {title: The one requirement}
YAML

secret_of() { # credential key
  kubectl -n bench get secret "$1" -o jsonpath="{.data.$2}" | base64 -d
}

# Starts `run` with ARGS on fresh ports; sets port, admin and op_pid.
start() { # args...
  port=$(free_port); admin=$(free_port)
  "$operator" run --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --namespace bench --signing-alg ES256 --api-rate-limit 0 --token-rate-limit 0 \
    --token-url "http://127.0.0.1:$port/oauth/token" "$@" \
    > /dev/null 2>> /tmp/bench-operator-oauth.log &
  op_pid=$!
  pids+=("$op_pid")
  wait_ready "$admin"
}

stop() { kill "$op_pid"; wait "$op_pid" 2> /dev/null || true; }

token_of() { # id secret
  curl -s -X POST "http://127.0.0.1:$port/oauth/token" -u "$1:$2" \
    -d grant_type=client_credentials | sed -E 's/.*"access_token":"([^"]+)".*/\1/'
}

lua=$(mktemp)
trap 'rm -f "$lua"; cleanup' EXIT
header() { printf '%-52s\t%s\t%s\t%s\t%s\n' "$1" "req/s" "p50" "p99" "non-2xx"; }
# Runs wrk with $lua at URL; prints the row and sets rate.
run_case() { # name url
  wrk -t1 -c$conns -d2s -s "$lua" "$2" > /dev/null
  wrk -t1 -c$conns -d"${seconds}s" --latency -s "$lua" "$2" > /tmp/bench-wrk-oauth.txt
  checked_row "$1" /tmp/bench-wrk-oauth.txt
}

# The operator's controller makes the credentials' Secrets.
start --audit-log off
kubectl -n bench wait --for=jsonpath='{.status.phase}'=Active apicred/load apicred/gateway --timeout=60s > /dev/null
id=$(secret_of load client_id); secret=$(secret_of load client_secret)
gw_id=$(secret_of gateway client_id); gw_secret=$(secret_of gateway client_secret)
until token=$(token_of "$id" "$secret") && [ "${#token}" -gt 100 ]; do sleep 0.2; done
header "Introspection and JSON:API ($conns connections, ${seconds}s)"
cat > "$lua" <<LUA
wrk.headers["Authorization"] = "Bearer $token"
wrk.headers["Accept"] = "application/vnd.api+json"
LUA
run_case "JSON:API GET one requirement" "http://127.0.0.1:$port/api/v1/requirements/one"
get_one=$rate
basic=$(printf '%s:%s' "$gw_id" "$gw_secret" | base64 -w0)
cat > "$lua" <<LUA
wrk.method = "POST"
wrk.body = "token=$token"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $basic"
LUA
curl -s -X POST "http://127.0.0.1:$port/oauth/introspect" -u "$gw_id:$gw_secret" \
  -d "token=$token" | grep -q '"active":true' || { echo "the token is not active" >&2; exit 1; }
run_case "POST /oauth/introspect (active token)" "http://127.0.0.1:$port/oauth/introspect"
introspect=$rate
echo "introspections/s against GET one: $(ratio "$introspect" "$get_one")"
stop

echo
token_case() { # name
  cat > "$lua" <<LUA
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&client_id=$id&client_secret=$secret"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA
  until [ "$(token_of "$id" "$secret" | wc -c)" -gt 100 ]; do sleep 0.2; done
  run_case "$1" "http://127.0.0.1:$port/oauth/token"
}
header "Tokens with the audit trail ($conns connections, ${seconds}s)"
sink_port=$(free_port)
"$sink" "127.0.0.1:$sink_port" healthy > /tmp/bench-sink-count.txt &
sink_pid=$!; pids+=("$sink_pid")
start --audit-log off --audit-webhook "http://127.0.0.1:$sink_port/"
token_case "ES256 tokens, audit webhook healthy"
healthy=$rate
delivered=$(curl -s "http://127.0.0.1:$admin/metrics" | awk '/catalio_audit_records_total\{.*webhook.*delivered/ {print $2}')
dropped=$(curl -s "http://127.0.0.1:$admin/metrics" | awk '/catalio_audit_records_total\{.*webhook.*dropped/ {print $2}')
stop
kill -INT "$sink_pid"; wait "$sink_pid" 2> /dev/null || true
echo "  healthy sink: ${delivered:-0} records delivered, ${dropped:-0} dropped (queue full)"

hole_port=$(free_port)
"$sink" "127.0.0.1:$hole_port" black-hole &
pids+=($!)
start --audit-log off --audit-webhook "http://127.0.0.1:$hole_port/"
token_case "ES256 tokens, audit webhook black-holed"
black=$rate
dropped=$(curl -s "http://127.0.0.1:$admin/metrics" | awk '/catalio_audit_records_total\{.*webhook.*dropped/ {print $2}')
stop
echo "  black-holed sink: ${dropped:-0} records dropped"

start --audit-log off
token_case "ES256 tokens, no audit trail"
off=$rate
stop
echo "black-holed against healthy: $(ratio "$black" "$healthy"); healthy against no audit: $(ratio "$healthy" "$off")"
