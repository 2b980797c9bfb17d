#!/usr/bin/env bash
# The audit webhook at the token endpoint's full rate. ES256 tokens are
# issued for SECONDS (wrk, 64 connections; the operator on one CPU, wrk
# and the webhook on the others), every record going to a webhook on
# loopback: first one request per record (--audit-webhook-batch 1, HTTP
# binary mode), then up to BATCH records per request (CloudEvents' batched
# mode). For each, once every record is delivered, dropped or failed:
# tokens issued, records delivered, dropped (the queue of 10,000 full) and
# failed, and the requests the webhook answered.
#
# The webhook is a small asyncio HTTP/1.1 server (Python): a request costs
# it about what one costs any receiver that parses it and answers 204.
# Fails, saying why, when wrk sees a non-2xx or a socket error, or the
# records are not all accounted for within two minutes.
#   bench/audit.sh [SECONDS] [BATCH]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
seconds=${1:-10}
batch=${2:-500}
require_wrk
pin_apart

receiver=$(mktemp --suffix .py)
lua=$(mktemp)
trap 'rm -f "$receiver" "$lua"; cleanup' EXIT
cat > "$receiver" <<'PY'
import asyncio, json, sys

counts = {"requests": 0, "events": 0}

async def serve(reader, writer):
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method = head[0].split(" ")[0]
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if method == "GET":
                out = json.dumps(counts).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(out), out))
            else:
                batched = headers.get("content-type") == "application/cloudevents-batch+json"
                counts["requests"] += 1
                counts["events"] += len(json.loads(body)) if batched else 1
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()

asyncio.run(main())
PY

bench_credential
printf 'records per request\ttokens\tdelivered\tdropped\tfailed\twebhook requests\tevents received\n'

# One sample of the operator's metrics at ADMIN: the series named, 0 when
# absent.
sample() { # admin series
  curl -fs "http://127.0.0.1:$1/metrics" |
    awk -v s="$2" 'index($0, s " ") == 1 {v = $2} END {printf "%d", v}'
}
records() { # admin result
  sample "$1" "catalio_audit_records_total{sink=\"webhook\",result=\"$2\"}"
}

case_of() { # batch
  local rport port admin server hook
  rport=$(free_port) port=$(free_port) admin=$(free_port)
  taskset -c "$wrk_cpus" python3 "$receiver" "$rport" &
  hook=$!
  pids+=("$hook")
  until curl -fs "http://127.0.0.1:$rport/" > /dev/null; do sleep 0.1; done
  taskset -c "$server_cpu" "$operator" run --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --namespace bench --signing-alg ES256 --token-rate-limit 0 --api-rate-limit 0 \
    --audit-log off --audit-webhook "http://127.0.0.1:$rport/events" --audit-webhook-batch "$1" \
    --token-url "http://127.0.0.1:$port/oauth/token" > /dev/null 2>&1 &
  server=$!
  pids+=("$server")
  wait_ready "$admin"
  kubectl -n bench wait --for=jsonpath='{.status.phase}'=Active apicred/load --timeout=60s > /dev/null
  local id secret
  id=$(kubectl -n bench get secret load -o jsonpath='{.data.client_id}' | base64 -d)
  secret=$(kubectl -n bench get secret load -o jsonpath='{.data.client_secret}' | base64 -d)
  cat > "$lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"client_id":"$id","client_secret":"$secret","grant_type":"client_credentials"}'
LUA
  local report
  report=$(taskset -c "$wrk_cpus" wrk -t1 -c64 -d"${seconds}s" -s "$lua" "http://127.0.0.1:$port/oauth/token")
  if echo "$report" | grep -qE 'Non-2xx|Socket errors'; then
    echo "the load was refused or failed:" >&2
    echo "$report" >&2
    exit 1
  fi
  local tokens delivered dropped failed
  tokens=$(sample "$admin" catalio_tokens_issued_total)
  [ "$tokens" -gt 0 ] || { echo "no token issued" >&2; exit 1; }
  for _ in $(seq 1 1200); do
    delivered=$(records "$admin" delivered) dropped=$(records "$admin" dropped) failed=$(records "$admin" failed)
    [ $((delivered + dropped + failed)) -ge "$tokens" ] && break
    sleep 0.1
  done
  [ $((delivered + dropped + failed)) -ge "$tokens" ] ||
    { echo "records unaccounted for: $tokens tokens, $delivered + $dropped + $failed records" >&2; exit 1; }
  local received
  received=$(curl -fs "http://127.0.0.1:$rport/" |
    python3 -c 'import json, sys; c = json.load(sys.stdin); print(c["requests"], c["events"], sep="\t")')
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$tokens" "$delivered" "$dropped" "$failed" "$received"
  kill "$server" "$hook"
  wait "$server" "$hook" 2> /dev/null || true
}

case_of 1
case_of "$batch"
