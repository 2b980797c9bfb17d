#!/usr/bin/env bash
# The API server goes away for SECONDS (30) under load. The replica reaches
# the API server through a TCP proxy this script cuts (open connections
# closed, new ones closed at once) while kubectl keeps writing straight to
# the API server. wrk loads the token endpoint and a JSON:API read for the
# whole outage. Prints the requests served and failed during it, what a
# JSON:API write and /readyz answered, and after the API server's return
# how long until the JSON:API served a requirement created meanwhile, a
# credential created meanwhile was Active and got a token, and /readyz was
# whole; and whether the process restarted.
#   chaos/outage.sh [SECONDS]
outage=${1:-30}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_wrk

# The proxy: SIGUSR1 cuts, SIGUSR2 restores.
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
proxy_port=$(free_port)
cat > "$run_dir/proxy.py" <<'PY'
import asyncio, signal, sys
listen, target = int(sys.argv[1]), sys.argv[2].split(":")
cut, open_ = False, set()
async def pipe(r, w):
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    except Exception:
        pass
    finally:
        w.close()
async def serve(cr, cw):
    if cut:
        cw.close()
        return
    try:
        sr, sw = await asyncio.open_connection(target[0], int(target[1]))
    except OSError:
        cw.close()
        return
    open_.update((cw, sw))
    await asyncio.gather(pipe(cr, sw), pipe(sr, cw))
    open_.difference_update((cw, sw))
def set_cut(value):
    global cut
    cut = value
    if value:
        for w in list(open_):
            w.transport.abort()
async def main():
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, set_cut, True)
    loop.add_signal_handler(signal.SIGUSR2, set_cut, False)
    srv = await asyncio.start_server(serve, "127.0.0.1", listen)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
PY
python3 "$run_dir/proxy.py" "$proxy_port" "${server#https://}" &
proxy_pid=$!
pids+=("$proxy_pid")
operator_kubeconfig=$run_dir/via-proxy.kubeconfig
kubectl config view --minify --flatten \
  | sed "s#server: $server#server: https://127.0.0.1:$proxy_port#" > "$operator_kubeconfig"

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

kill -USR1 "$proxy_pid"
cut=$(now)
wrk -t1 -c16 -d"${outage}s" -s "$run_dir/token.lua" "$replica_base/oauth/token" > "$run_dir/wrk-token.txt" &
load=($!)
wrk -t1 -c16 -d"${outage}s" -s "$run_dir/read.lua" "$api/requirements/before" > "$run_dir/wrk-read.txt" &
load+=($!)
credential late | kubectl -n "$ns" apply -f - > /dev/null
printf 'apiVersion: catalio.ai/v1\nkind: Requirement\nmetadata: {name: meanwhile}\nspec: {title: Meanwhile}\n' \
  | kubectl -n "$ns" apply -f - > /dev/null
write=$(curl -s -w ' %{http_code}' -X POST "$api/requirements" -H "Authorization: Bearer $token" \
  -H 'Content-Type: application/vnd.api+json' \
  -d '{"data":{"type":"requirement","attributes":{"title":"During"}}}')
# Until the watches have noticed (or the outage is over): what /readyz says.
until readyz=$(curl -s -w ' (%{http_code})' "$replica_admin/readyz"); [[ $readyz == *degraded* ]]; do
  kill -0 "${load[0]}" 2> /dev/null || break
  sleep 0.2
done
wait "${load[@]}"
kill -USR2 "$proxy_pid"
back=$(now)

echo "outage: $(since "$cut")s, the API server cut off from the replica, kubectl writing directly"
echo "during it: token endpoint $(tally "$run_dir/wrk-token.txt"); JSON:API GET $(tally "$run_dir/wrk-read.txt")"
echo "during it: a JSON:API write answered ${write##* } ($(grep -o '"code":"[a-z_]*"' <<< "$write" | head -1))"
echo "during it: /readyz ${readyz:0:160}..."
until curl -sf -o /dev/null -H "Authorization: Bearer $token" "$api/requirements/meanwhile"; do sleep 0.1; done
echo "after the return: a requirement created meanwhile served in $(since "$back")s"
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
echo "after the return: a credential created meanwhile Active and issuing tokens in $(since "$back")s"
until [[ $(curl -s "$replica_admin/readyz") == ready ]]; do sleep 0.2; done
echo "after the return: /readyz whole in $(since "$back")s"
if kill -0 "$pid" 2> /dev/null && [[ $replica_pid == "$pid" ]]; then
  echo "the process never restarted"
else
  echo "the process died" >&2; exit 1
fi
