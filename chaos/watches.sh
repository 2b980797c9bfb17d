#!/usr/bin/env bash
# Watches that break: a replica holding OBJECTS (10000) requirements and 20
# credentials reaches the API server through a proxy. Twice, the proxy is
# stopped (every watch stream closed under the replica), a tenth of the
# requirements are deleted, changed and added and credentials revoked,
# rotated and created, and the proxy comes back:
#   1. to the same kube-apiserver, whose watch cache still holds the
#      changes: the watches resume where they were, with no relist;
#   2. to a second kube-apiserver on the same etcd, started after the
#      changes: its watch cache begins later, so resuming is refused with
#      410 Gone and every watch relists.
# After each, it waits until the JSON:API lists exactly what kubectl lists
# (every id once, every title current, meta.total right) and the token
# endpoint answers as the credentials say (tokens for live ones, 401 for
# revoked secrets and rotated-away ones), then prints the time that took
# and the relists the replica counted (catalio_watch_lists_total).
#   chaos/watches.sh [OBJECTS]
objects=${1:-10000}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
proxy_port=$(free_port)
proxy_to() { # host:port
  python3 "$run_dir/proxy.py" "$proxy_port" "$1" &
  proxy_pid=$!
  pids+=("$proxy_pid")
  until python3 -c "import socket; socket.create_connection(('127.0.0.1', $proxy_port), 1)" 2> /dev/null; do
    sleep 0.1
  done
}
proxy_to "${server#https://}"
operator_kubeconfig=$run_dir/via-proxy.kubeconfig
kubectl config view --minify --flatten \
  | sed "s#server: $server#server: https://127.0.0.1:$proxy_port#" > "$operator_kubeconfig"

# Requirements req-FROM..req-TO-1 titled TITLE, applied in chunks; each
# labelled with its tenth (req-I: tenth I / (OBJECTS / 10)), so a tenth is
# deleted in one request.
requirements() { # from to title
  local i
  for ((i = $1; i < $2; i++)); do
    printf -- '---\napiVersion: catalio.ai/v1\nkind: Requirement\nmetadata: {name: req-%d, labels: {tenth: "%d"}}\nspec: {title: "%s %d"}\n' \
      "$i" $((i / (objects / 10))) "$3" "$i"
    if (( (i - $1) % 1000 == 999 || i == $2 - 1 )); then echo "# end"; fi
  done | awk -v dir="$run_dir" '/^# end/ {close(f); n++; next} {f = dir "/chunk-" n ".yaml"; print > f}'
  for f in "$run_dir"/chunk-*.yaml; do
    kubectl -n "$ns" apply --server-side -f "$f" > /dev/null
    rm "$f"
  done
}
started=$(now)
requirements 0 "$objects" Original
for i in $(seq 0 19); do credential "cred-$i"; done | kubectl -n "$ns" apply -f - > /dev/null
credential checker "scopes: [\"*:read\"]" | kubectl -n "$ns" apply -f - > /dev/null
echo "created $objects requirements and 21 credentials in $(since "$started")s"
operator_args="--api-rate-limit 0 --token-rate-limit 0 --max-objects-per-kind $((objects * 2))"
replica
for i in $(seq 0 19); do until active "cred-$i"; do sleep 0.2; done; done
until active checker; do sleep 0.2; done
lists() { curl -s "$replica_admin/metrics" | awk '$1 == "catalio_watch_lists_total" {print $2}'; }

# Compares the replica with the API server; exits 0 when they agree.
# Remembers each credential's secrets in $run_dir/secrets.json so a
# revoked or rotated-away secret can be tried later.
cat > "$run_dir/compare.py" <<'PY'
import base64, http.client, json, os, subprocess, sys, urllib.parse, urllib.request
base, ns, run_dir, verbose = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
def kubectl(*args):
    return json.loads(subprocess.run(["kubectl", "-n", ns, *args, "-o", "json"],
                                     check=True, capture_output=True).stdout)
# Each comparison asks from its own loopback address: secrets the replica
# has not caught up with yet are refused, and enough refusals from one
# address in a minute would lock the next comparison out (429).
rounds = f"{run_dir}/rounds"
round_ = int(open(rounds).read()) + 1 if os.path.exists(rounds) else 0
open(rounds, "w").write(str(round_))
source = f"127.0.{1 + round_ // 250 % 250}.{2 + round_ % 250}"
host, port = urllib.parse.urlsplit(base).hostname, urllib.parse.urlsplit(base).port
def post(form):
    conn = http.client.HTTPConnection(host, port, timeout=10, source_address=(source, 0))
    conn.request("POST", "/oauth/token", json.dumps(form), {"Content-Type": "application/json"})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, json.loads(body) if r.status == 200 else None
def token(id_, secret):
    return post({"grant_type": "client_credentials", "client_id": id_, "client_secret": secret})
problems = []
secrets = {s["metadata"]["name"]: {k: base64.b64decode(v).decode(errors="replace") for k, v in s.get("data", {}).items()}
           for s in kubectl("get", "secrets")["items"]}
seen_path = f"{run_dir}/secrets.json"
seen = json.load(open(seen_path)) if os.path.exists(seen_path) else {}
checker = secrets["checker"]
status, body = token(checker["client_id"], checker["client_secret"])
if status != 200:
    print(f"checker token: {status}"); sys.exit(1)
bearer = body["access_token"]
want = {r["metadata"]["name"]: r["spec"]["title"] for r in kubectl("get", "requirements")["items"]}
got, ids, total, offset = {}, [], None, 0
while True:
    q = urllib.parse.urlencode({"page[offset]": offset, "page[limit]": 100, "fields[requirement]": "title"})
    req = urllib.request.Request(f"{base}/api/v1/requirements?{q}",
                                 headers={"Authorization": f"Bearer {bearer}", "Accept": "application/vnd.api+json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        doc = json.load(r)
    total = doc["meta"]["total"]
    for item in doc["data"]:
        ids.append(item["id"]); got[item["id"]] = item["attributes"]["title"]
    offset += 100
    if offset >= total:
        break
if len(ids) != len(set(ids)):
    problems.append(f"{len(ids) - len(set(ids))} duplicate ids")
if total != len(want):
    problems.append(f"meta.total {total}, kubectl lists {len(want)}")
missing = set(want) - set(got); extra = set(got) - set(want)
stale = [n for n in set(want) & set(got) if want[n] != got[n]]
for what, names in (("missing", missing), ("extra", extra), ("stale", stale)):
    if names:
        problems.append(f"{len(names)} {what} (e.g. {sorted(names)[:3]})")
for cred in kubectl("get", "apicredentials")["items"]:
    name = cred["metadata"]["name"]
    if name == "checker":
        continue
    known = seen.setdefault(name, [])
    current = secrets.get(name)
    if current and current not in known:
        known.append(current)
    revoked = cred["spec"].get("revoked", False)
    if not revoked and (cred.get("status", {}).get("phase") != "Active" or not current):
        problems.append(f"{name} not Active yet"); continue
    for s in known:
        live = not revoked and s == current
        code, _ = token(s["client_id"], s["client_secret"])
        if code != (200 if live else 401):
            problems.append(f"{name}: {'current' if s == current else 'old'} secret got {code}")
json.dump(seen, open(seen_path, "w"))
if problems:
    if verbose:
        print("; ".join(problems))
    sys.exit(1)
print(f"JSON:API lists all {total} requirements once, current; {len(seen)} credentials answer as they should")
PY
agree() { python3 "$run_dir/compare.py" "$replica_base" "$ns" "$run_dir" "${1:-0}"; }
agree 1

# Changes made while the replica cannot see them: a tenth of the
# requirements each deleted, retitled and added; three credentials each
# revoked, rotated and created.
round=0
change() {
  local tenth=$((objects / 10)) first last i
  round=$((round + 1))
  first=$(( (round - 1) * tenth ))
  kubectl -n "$ns" delete requirements -l "tenth=$((round - 1))" --wait=false > /dev/null
  requirements $((first + tenth)) $((first + 2 * tenth)) "Round $round"
  last=$((objects + (round - 1) * tenth))
  requirements "$last" $((last + tenth)) "Added $round"
  for i in 0 1 2; do
    kubectl -n "$ns" patch apicred "cred-$(( (round - 1) * 6 + i ))" --type merge -p '{"spec":{"revoked":true}}' > /dev/null
    kubectl -n "$ns" patch apicred "cred-$(( (round - 1) * 6 + 3 + i ))" --type merge \
      -p '{"spec":{"rotation":{"counter":1}}}' > /dev/null
    credential "new-$round-$i" | kubectl -n "$ns" apply -f - > /dev/null
  done
}
# Waits until the replica agrees with the API server; prints how long.
caught_up() {
  local back=$1
  for _ in $(seq 1 600); do
    agree && { echo "caught up $(since "$back")s after the return"; return; }
    sleep 0.5
  done
  agree 1 || { echo "the replica never caught up" >&2; exit 1; }
}

echo "1. watch streams closed; back to the same kube-apiserver"
before=$(lists)
kill "$proxy_pid"
change
proxy_to "${server#https://}"
back=$(now)
caught_up "$back"
relists=$(( $(lists) - before ))
echo "relists: $relists (0: every watch resumed where it was)"

echo "2. watch streams closed; back to a second kube-apiserver started after the changes (410 Gone)"
before=$(lists)
kill "$proxy_pid"
change
# The second API server: the first's command line on another port.
apiserver_args=()
mapfile -d '' apiserver_args < "/proc/$(cat "$cp_dir/apiserver.pid")/cmdline"
second_port=$(free_port)
for i in "${!apiserver_args[@]}"; do
  [[ ${apiserver_args[$i]} == --secure-port ]] && apiserver_args[i + 1]=$second_port
done
setsid "${apiserver_args[@]}" > "$run_dir/second-apiserver.log" 2>&1 < /dev/null &
pids+=($!)
until kubectl --server "https://127.0.0.1:$second_port" get --raw /readyz > /dev/null 2>&1; do sleep 0.2; done
proxy_to "127.0.0.1:$second_port"
back=$(now)
caught_up "$back"
relists=$(( $(lists) - before ))
echo "relists: $relists (watches whose resume the second API server refused with 410 Gone)"
(( relists > 0 )) || { echo "no watch relisted: the second API server did not refuse the resume" >&2; exit 1; }
agree 1
