#!/usr/bin/env bash
# The API server goes away for SECONDS (30) under load. MODE apiserver (the
# default): the replica reaches the API server through a TCP proxy this
# script cuts (open connections closed, new ones closed at once) while
# kubectl keeps writing straight to the API server. MODE etcd: etcd is
# SIGKILLed and started again afterwards on its data, kube-apiserver stays
# up, and kubectl's writes made meanwhile are retried until they land.
# wrk loads the token endpoint and a JSON:API read for the whole outage.
# Prints the requests served and failed during it, what a JSON:API write
# and /readyz answered, and after the return how long until the JSON:API
# served a requirement created meanwhile, a credential created meanwhile
# was Active and got a token, and /readyz was whole; and whether the
# process restarted.
#   chaos/outage.sh [SECONDS] [apiserver|etcd]
outage=${1:-30}
mode=${2:-apiserver}
[[ $mode == apiserver || $mode == etcd ]] || { echo "MODE is apiserver or etcd, not $mode" >&2; exit 2; }
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_wrk

# The proxy (chaos/lib.sh): SIGUSR1 cuts, SIGUSR2 restores.
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
proxy_port=$(free_port)
if [[ $mode == apiserver ]]; then
  python3 "$run_dir/proxy.py" "$proxy_port" "${server#https://}" &
  proxy_pid=$!
  pids+=("$proxy_pid")
  operator_kubeconfig=$run_dir/via-proxy.kubeconfig
  kubectl config view --minify --flatten \
    | sed "s#server: $server#server: https://127.0.0.1:$proxy_port#" > "$operator_kubeconfig"
fi
# etcd: its command line, to start it again as it was (cluster.sh stops
# whatever etcd.pid names).
etcd_args=()
mapfile -d '' etcd_args < "/proc/$(cat "$cp_dir/etcd.pid")/cmdline"
cut_off() {
  if [[ $mode == apiserver ]]; then kill -USR1 "$proxy_pid"; return; fi
  kill -9 "$(cat "$cp_dir/etcd.pid")"
}
restore() {
  if [[ $mode == apiserver ]]; then kill -USR2 "$proxy_pid"; return; fi
  setsid "${etcd_args[@]}" >> "$cp_dir/etcd.log" 2>&1 < /dev/null &
  echo $! > "$cp_dir/etcd.pid"
}
# kubectl apply of stdin, retried until the API server takes it (at once in
# apiserver mode: kubectl is not cut off); when it did goes to
# $run_dir/landed-NAME.
apply_meanwhile() { # name
  local manifest
  manifest=$(cat)
  until kubectl -n "$ns" apply --request-timeout 2s -f - <<< "$manifest" > /dev/null 2>&1; do sleep 0.2; done
  now > "$run_dir/landed-$1"
}
# Seconds since the return and since NAME's write landed, whichever is later.
caught_up() { # name
  local landed
  landed=$(cat "$run_dir/landed-$1")
  if awk -v l="$landed" -v b="$back" 'BEGIN {exit !(l > b)}'; then
    echo "$(since "$back")s after the return, $(since "$landed")s after kubectl's write landed"
  else
    echo "$(since "$back")s"
  fi
}

kubectl -n "$ns" apply -f - > /dev/null <<YAML
apiVersion: catalio.ai/v1
kind: ApiCredential
metadata: {name: load}
spec: {displayName: Load, scopes: ["*:write"]}
---
apiVersion: catalio.ai/v1
kind: Requirement
metadata: {name: before}
spec: {title: Before}
YAML
operator_args="--api-rate-limit 0 --token-rate-limit 0"
replica
pid=$replica_pid
until active load; do sleep 0.2; done
id=$(kubectl -n "$ns" get secret load -o jsonpath='{.data.client_id}' | base64 -d)
secret=$(kubectl -n "$ns" get secret load -o jsonpath='{.data.client_secret}' | base64 -d)
form="{\"client_id\":\"$id\",\"client_secret\":\"$secret\",\"grant_type\":\"client_credentials\"}"
token=""
until [[ -n $token ]]; do
  token=$(curl -s -X POST "$replica_base/oauth/token" -H 'Content-Type: application/json' -d "$form" \
    | sed -nE 's/.*"access_token":"([^"]+)".*/\1/p')
done
api=$replica_base/api/v1
until curl -sf -o /dev/null -H "Authorization: Bearer $token" "$api/requirements/before"; do sleep 0.2; done
cat > "$run_dir/token.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$form'
LUA
cat > "$run_dir/read.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $token"
wrk.headers["Accept"] = "application/vnd.api+json"
LUA
# served and failed requests of a wrk report
tally() {
  awk '/requests in/ {n = $1} /Non-2xx/ {bad = $NF}
       /Socket errors/ {gsub(",", ""); s = $4 + $6 + $8 + $10}
       END {printf "%d served, %d failed", n - bad, bad + s}' "$1"
}

cut_off
cut=$(now)
wrk -t1 -c16 -d"${outage}s" -s "$run_dir/token.lua" "$replica_base/oauth/token" > "$run_dir/wrk-token.txt" &
load=($!)
wrk -t1 -c16 -d"${outage}s" -s "$run_dir/read.lua" "$api/requirements/before" > "$run_dir/wrk-read.txt" &
load+=($!)
credential late | apply_meanwhile late &
meanwhile=($!)
printf 'apiVersion: catalio.ai/v1\nkind: Requirement\nmetadata: {name: meanwhile}\nspec: {title: Meanwhile}\n' \
  | apply_meanwhile meanwhile &
meanwhile+=($!)
write_started=$(now)
write=$(curl -s -D "$run_dir/write-headers.txt" -w ' %{http_code}' -X POST "$api/requirements" -H "Authorization: Bearer $token" \
  -H 'Content-Type: application/vnd.api+json' \
  -d '{"data":{"type":"requirement","attributes":{"title":"During"}}}')
write_took=$(since "$write_started")
retry_after=$(awk -F': ' 'tolower($1) == "retry-after" {print $2}' "$run_dir/write-headers.txt" | tr -d '\r')
# Until the watches have noticed (or the outage is over): what /readyz says.
until readyz=$(curl -s -w ' (%{http_code})' "$replica_admin/readyz"); [[ $readyz == *degraded* ]]; do
  kill -0 "${load[0]}" 2> /dev/null || break
  sleep 0.2
done
wait "${load[@]}"
restore
back=$(now)
wait "${meanwhile[@]}"

if [[ $mode == apiserver ]]; then
  echo "outage: $(since "$cut")s, the API server cut off from the replica, kubectl writing directly"
else
  echo "outage: $(since "$cut")s, etcd killed (kube-apiserver up), kubectl retrying its writes"
fi
echo "during it: token endpoint $(tally "$run_dir/wrk-token.txt"); JSON:API GET $(tally "$run_dir/wrk-read.txt")"
echo "during it: a JSON:API write answered ${write##* } ($(grep -o '"code":"[a-z_]*"' <<< "$write" | head -1))" \
  "in ${write_took}s, Retry-After: ${retry_after:-none}"
echo "during it: /readyz ${readyz:0:160}..."
until curl -sf -o /dev/null -H "Authorization: Bearer $token" "$api/requirements/meanwhile"; do sleep 0.1; done
echo "after the return: a requirement created meanwhile served $(caught_up meanwhile)"
until active late; do sleep 0.1; done
late_id=$(kubectl -n "$ns" get secret late -o jsonpath='{.data.client_id}' | base64 -d)
late_secret=$(kubectl -n "$ns" get secret late -o jsonpath='{.data.client_secret}' | base64 -d)
# Known to the replica's index as Active (asking the token endpoint until it
# answers would trip its failed-attempt throttle), then one token.
until curl -s "$replica_admin/metrics" | grep -q '^catalio_credentials{phase="Active"} 2$'; do
  sleep 0.1
done
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$replica_base/oauth/token" \
  -H 'Content-Type: application/json' \
  -d "{\"client_id\":\"$late_id\",\"client_secret\":\"$late_secret\",\"grant_type\":\"client_credentials\"}")
[[ $code == 200 ]] || { echo "the credential created meanwhile got $code" >&2; exit 1; }
echo "after the return: a credential created meanwhile Active and issuing tokens $(caught_up late)"
until [[ $(curl -s "$replica_admin/readyz") == ready ]]; do sleep 0.2; done
echo "after the return: /readyz whole in $(since "$back")s"
if kill -0 "$pid" 2> /dev/null && [[ $replica_pid == "$pid" ]]; then
  echo "the process never restarted"
else
  echo "the process died" >&2; exit 1
fi
