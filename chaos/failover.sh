#!/usr/bin/env bash
# Leader failover under load: two replicas (`catalio-operator run`) on the
# real control plane, rotating their signing key every KEY_ROTATION (4s, so
# kills land before, during and after rotations); KILLS times, a burst of
# credential changes (new credentials and rotations) is applied and the
# leader is SIGKILLed at once. Meanwhile a client gets tokens from every
# live replica without pause and checks each token's key is in the JWKS of
# every replica that answers. Prints per kill how long until the other
# replica held the lease and until a credential created right after the
# kill was Active (a fresh replica replaces the dead one); then the tokens
# checked, those whose key some replica did not publish, signing keys made
# closer together than KEY_ROTATION (a rotation applied twice), and the
# damage count (chaos/lib.sh). The goal is zero of each kind.
#   chaos/failover.sh [KILLS] [LEASE_DURATION] [KEY_ROTATION, in whole seconds: Ns]
kills=${1:-5}
lease=${2:-3s}
key_rotation=${3:-4s}
operator_args="--token-rate-limit 0 --signing-key-rotation $key_rotation --signing-key-publish-delay 1s"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

holder() {
  kubectl -n "$ns" get lease catalio-operator-leader -o jsonpath='{.spec.holderIdentity}' 2> /dev/null || true
}

declare -A replicas=()
replica; replicas[$replica_pid]=$replica_base
replica; replicas[$replica_pid]=$replica_base
for i in $(seq 1 10); do credential "base-$i"; done | kubectl -n "$ns" apply -f - > /dev/null
for i in $(seq 1 10); do
  until active "base-$i"; do sleep 0.2; done
  rotations[base-$i]=0
done

# The token checker: the serving replicas are in $run_dir/bases.
credential checker | kubectl -n "$ns" apply -f - > /dev/null
until active checker; do sleep 0.2; done
checker_id=$(kubectl -n "$ns" get secret checker -o jsonpath='{.data.client_id}' | base64 -d)
checker_secret=$(kubectl -n "$ns" get secret checker -o jsonpath='{.data.client_secret}' | base64 -d)
serving() { printf '%s\n' "${replicas[@]}" > "$run_dir/bases.new"; mv "$run_dir/bases.new" "$run_dir/bases"; }
serving
cat > "$run_dir/checker.py" <<'PY'
import base64, json, os, sys, time, urllib.request
run_dir, client_id, secret = sys.argv[1:4]
form = json.dumps({"grant_type": "client_credentials", "client_id": client_id,
                   "client_secret": secret}).encode()
def call(url, body=None):
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)
tokens = unpublished = unreachable = 0
kids = set()
while not os.path.exists(f"{run_dir}/stop"):
    bases = open(f"{run_dir}/bases").read().split()
    for base in bases:
        try:
            token = call(f"{base}/oauth/token", form)["access_token"]
        except Exception:
            unreachable += 1
            continue
        header = token.split(".")[0]
        kid = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
        tokens += 1
        kids.add(kid)
        for other in bases:
            try:
                published = {k["kid"] for k in call(f"{other}/.well-known/jwks.json")["keys"]}
            except Exception:
                continue
            if kid not in published:
                unpublished += 1
                print(f"token from {base} signed by {kid}, not published by {other}", file=sys.stderr)
json.dump({"tokens": tokens, "unpublished": unpublished, "unreachable": unreachable,
           "kids": len(kids)}, open(f"{run_dir}/checked.json", "w"))
PY
python3 "$run_dir/checker.py" "$run_dir" "$checker_id" "$checker_secret" &
checker_pid=$!
pids+=("$checker_pid")

printf '%-6s\t%s\t%s\n' "kill" "lease taken (s)" "new credential Active (s)"
for k in $(seq 1 "$kills"); do
  old=$(holder)
  leader_pid=${old##*-}
  [[ -n ${replicas[$leader_pid]:-} ]] || { echo "no replica holds the lease ($old)" >&2; exit 1; }
  # The burst: five new credentials, three rotations, in flight at the kill.
  burst=()
  for i in $(seq 1 5); do credential "burst-$k-$i"; done | kubectl -n "$ns" apply -f - > /dev/null &
  burst+=($!)
  rotated=()
  for i in $(( (k % 10) + 1 )) $(( ((k + 3) % 10) + 1 )) $(( ((k + 6) % 10) + 1 )); do
    rotations[base-$i]=$(( ${rotations[base-$i]} + 1 ))
    rotated+=("base-$i")
    kubectl -n "$ns" patch apicred "base-$i" --type merge \
      -p "{\"spec\":{\"rotation\":{\"counter\":${rotations[base-$i]}}}}" > /dev/null &
    burst+=($!)
  done
  kill -9 "$leader_pid"
  killed=$(now)
  wait "$leader_pid" 2> /dev/null || true
  unset "replicas[$leader_pid]"
  serving
  wait "${burst[@]}"
  credential "probe-$k" | kubectl -n "$ns" apply -f - > /dev/null
  until [[ -n $(holder) && $(holder) != "$old" ]]; do sleep 0.1; done
  taken=$(since "$killed")
  until active "probe-$k"; do sleep 0.1; done
  printf '%-6s\t%s\t%s\n' "$k" "$taken" "$(since "$killed")"
  # Each rotation applied before the next asks again (two asks before one
  # reconcile are rightly one rotation, which the count would call damage).
  for name in "${rotated[@]}"; do
    until [[ $(applied_rotation "$name") == "${rotations[$name]}" ]]; do sleep 0.1; done
  done
  replica; replicas[$replica_pid]=$replica_base
  serving
done
touch "$run_dir/stop"
wait "$checker_pid"

echo
echo "kills: $kills; lease duration: $lease; signing-key rotation every $key_rotation"
rotation_s=${key_rotation%s}
kubectl -n "$ns" get secret catalio-operator-signing-keys -o jsonpath='{.data.keys\.json}' | base64 -d \
  | python3 -c '
import json, sys
from datetime import datetime
every = float(sys.argv[1])
made = sorted(datetime.fromisoformat(k["createdAt"].replace("Z", "+00:00")) for k in json.load(sys.stdin))
gaps = [(b - a).total_seconds() for a, b in zip(made, made[1:])]
close = sum(g < every for g in gaps)
print(f"signing keys made: {len(made)}, gaps {min(gaps):.1f}-{max(gaps):.1f}s; closer than {every:g}s (a rotation applied twice): {close}")
sys.exit(1 if close else 0)
' "$rotation_s" || key_damage=1
python3 - "$run_dir/checked.json" <<'PY' || key_damage=1
import json, sys
c = json.load(open(sys.argv[1]))
print(f"tokens checked: {c['tokens']} (signed by {c['kids']} keys; {c['unreachable']} requests to a killed replica);"
      f" signed by a key some replica did not publish: {c['unpublished']}")
sys.exit(1 if c["unpublished"] else 0)
PY
for p in "${!replicas[@]}"; do base=${replicas[$p]}; break; done
count_damage
(( ${key_damage:-0} == 0 ))
