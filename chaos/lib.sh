# Shared by the fault scripts: bench/lib.sh's control plane and release
# binary, operator replicas, credentials, and the damage count.
source "$(dirname "${BASH_SOURCE[0]}")/../bench/lib.sh"
ns=chaos
kubectl create namespace "$ns" > /dev/null
# This run's files: runs at once must not share them.
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/catalio-chaos-XXXXXX")
echo "operator logs and the Secret record: $run_dir" >&2

# A TCP proxy: `python3 "$run_dir/proxy.py" LISTEN_PORT HOST:PORT`; SIGUSR1
# cuts it off (open connections closed, new ones closed at once), SIGUSR2
# restores it.
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

# Starts `catalio-operator run` for $ns with lease duration $lease (and
# $operator_args, through $operator_kubeconfig if set); sets replica_pid,
# replica_base and replica_admin.
replica() {
  local port admin
  port=$(free_port); admin=$(free_port)
  KUBECONFIG=${operator_kubeconfig:-$KUBECONFIG} \
    "$operator" run --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --namespace "$ns" --watch-namespaces "$ns" --lease-duration "${lease:-3s}" \
    --shutdown-delay 0s --token-url "http://127.0.0.1:$port/oauth/token" ${operator_args:-} \
    2>> "$run_dir/operator.log" &
  replica_pid=$!
  pids+=("$replica_pid")
  replica_base=http://127.0.0.1:$port
  replica_admin=http://127.0.0.1:$admin
  wait_ready "$admin"
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }
credential() { # name [spec fields]
  printf -- '---\napiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {name: %s}\nspec: {displayName: "%s"%s}\n' \
    "$1" "$1" "${2:+, $2}"
}
phase() { kubectl -n "$ns" get apicred "$1" -o jsonpath='{.status.phase}' 2> /dev/null || true; }
active() { [[ $(phase "$1") == Active ]]; }
applied_rotation() { kubectl -n "$ns" get apicred "$1" -o jsonpath='{.status.rotationCounter}' 2> /dev/null || true; }

# Every value each managed Secret's client_secret takes, as it happens.
kubectl -n "$ns" get secrets -l app.kubernetes.io/managed-by=catalio-operator --watch \
  -o jsonpath='{.metadata.name} {.data.client_secret}{"\n"}' > "$run_dir/secrets.txt" 2> /dev/null &
pids+=($!)

# Per credential: rotations asked, revoked, and client_secret values the
# script itself caused besides rotations (a deleted Secret is regenerated:
# one; a hand-overwritten secret is replaced: the edit and its replacement).
declare -A rotations=() revoked=() replaced=()
# The client_secret values the Secret watch has seen for $1.
values_seen() { awk -v n="$1" '$1 == n && $2 != "" {print $2}' "$run_dir/secrets.txt" | sort -u | wc -l; }
values_expected() { echo $(( 1 + ${rotations[$1]:-0} + ${replaced[$1]:-0} )); }
# Nothing asked of $1 is still pending: Active, the last rotation applied,
# every change the script caused to its Secret seen.
settled() {
  active "$1" && [[ $(applied_rotation "$1") == "${rotations[$1]:-0}" ]] \
    && (( $(values_seen "$1") == $(values_expected "$1") ))
}

# Waits for every credential to settle, then counts the damage against
# $base (a serving replica): credentials neither Active nor (if revoked)
# Revoked, Secrets whose hash is not the status's, Secrets whose secret
# gets no token, revoked credentials with a Secret, and secrets not changed
# exactly as often as asked (client_secret values seen other than 1 + the
# rotations asked + the script's own replacements, or
# status.rotationCounter not the spec's). Fails unless every count is zero.
count_damage() {
  local names total name want id secret code asked seen expected applied hash status_hash
  local unsettled=0 mismatched=0 no_token=0 revoked_alive=0 wrong_rotations=0
  names=$(kubectl -n "$ns" get apicred -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
  total=$(wc -l <<< "$names")
  for name in $names; do
    want=Active; [[ -n ${revoked[$name]:-} ]] && want=Revoked
    asked=${rotations[$name]:-0}
    # Settled: in its phase, and (if live) with every change applied.
    for _ in $(seq 1 300); do
      if [[ $want == Revoked ]]; then [[ $(phase "$name") == Revoked ]] && break
      else settled "$name" && break
      fi
      sleep 0.2
    done
    [[ $(phase "$name") == "$want" ]] || { unsettled=$((unsettled + 1)); echo "$name: $(phase "$name"), not $want" >&2; continue; }
    if [[ $want == Revoked ]]; then
      kubectl -n "$ns" get secret "$name" > /dev/null 2>&1 && revoked_alive=$((revoked_alive + 1))
      continue
    fi
    hash=$(kubectl -n "$ns" get secret "$name" -o jsonpath='{.metadata.annotations.catalio\.ai/secret-sha256}')
    status_hash=$(kubectl -n "$ns" get apicred "$name" -o jsonpath='{.status.secretHash}')
    [[ -n $hash && $hash == "$status_hash" ]] \
      || { mismatched=$((mismatched + 1)); echo "$name: Secret hash ${hash:-none}, status ${status_hash:-none}" >&2; }
    id=$(kubectl -n "$ns" get secret "$name" -o jsonpath='{.data.client_id}' | base64 -d)
    secret=$(kubectl -n "$ns" get secret "$name" -o jsonpath='{.data.client_secret}' | base64 -d)
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base/oauth/token" \
      -H 'Content-Type: application/json' \
      -d "{\"client_id\":\"$id\",\"client_secret\":\"$secret\",\"grant_type\":\"client_credentials\"}")
    [[ $code == 200 ]] || { no_token=$((no_token + 1)); echo "$name: its Secret's secret got $code" >&2; }
    seen=$(values_seen "$name")
    expected=$(values_expected "$name")
    applied=$(applied_rotation "$name")
    if (( seen != expected )) || [[ ${applied:-0} != "$asked" ]]; then
      echo "$name: rotations asked $asked, secrets seen $seen (expected $expected)," \
        "status.rotationCounter ${applied:-none}" >&2
      wrong_rotations=$((wrong_rotations + 1))
    fi
  done
  echo "credentials: $total"
  echo "damage: unsettled $unsettled, Secret not matching status $mismatched, no token from their Secret $no_token," \
    "revoked with a Secret $revoked_alive, secrets not changed exactly as asked $wrong_rotations"
  (( unsettled + mismatched + no_token + revoked_alive + wrong_rotations == 0 ))
}
