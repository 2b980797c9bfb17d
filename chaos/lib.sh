# Shared by the fault scripts: bench/lib.sh's control plane and release
# binary, operator replicas, credentials, and the damage count.
source "$(dirname "${BASH_SOURCE[0]}")/../bench/lib.sh"
ns=chaos
kubectl create namespace "$ns" > /dev/null
# This run's files: runs at once must not share them.
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/catalio-chaos-XXXXXX")
echo "operator logs and the Secret record: $run_dir" >&2

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

declare -A rotations=() revoked=()

# Waits for every credential to settle, then counts the damage against
# $base (a serving replica): credentials neither Active nor (if revoked)
# Revoked, Secrets whose secret gets no token, revoked credentials with a
# Secret or a token, and rotations not applied exactly once (client_secret
# values seen other than 1 + the rotations asked, or status.rotationCounter
# not the spec's). Fails unless every count is zero.
count_damage() {
  local names total name want id secret code asked seen applied
  local unsettled=0 no_token=0 revoked_alive=0 wrong_rotations=0
  names=$(kubectl -n "$ns" get apicred -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
  total=$(wc -l <<< "$names")
  for name in $names; do
    want=Active; [[ -n ${revoked[$name]:-} ]] && want=Revoked
    asked=${rotations[$name]:-0}
    # Settled: in its phase, and (if live) with the last rotation applied.
    for _ in $(seq 1 300); do
      [[ $(phase "$name") == "$want" ]] \
        && { [[ $want == Revoked ]] || [[ $(applied_rotation "$name") == "$asked" ]]; } \
        && break
      sleep 0.2
    done
    [[ $(phase "$name") == "$want" ]] || { unsettled=$((unsettled + 1)); echo "$name: $(phase "$name"), not $want" >&2; continue; }
    if [[ $want == Revoked ]]; then
      kubectl -n "$ns" get secret "$name" > /dev/null 2>&1 && revoked_alive=$((revoked_alive + 1))
      continue
    fi
    id=$(kubectl -n "$ns" get secret "$name" -o jsonpath='{.data.client_id}' | base64 -d)
    secret=$(kubectl -n "$ns" get secret "$name" -o jsonpath='{.data.client_secret}' | base64 -d)
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base/oauth/token" \
      -H 'Content-Type: application/json' \
      -d "{\"client_id\":\"$id\",\"client_secret\":\"$secret\",\"grant_type\":\"client_credentials\"}")
    [[ $code == 200 ]] || { no_token=$((no_token + 1)); echo "$name: its Secret's secret got $code" >&2; }
    seen=$(awk -v n="$name" '$1 == n && $2 != "" {print $2}' "$run_dir/secrets.txt" | sort -u | wc -l)
    applied=$(applied_rotation "$name")
    if (( seen != asked + 1 )) || [[ ${applied:-0} != "$asked" ]]; then
      echo "$name: rotations asked $asked, secrets seen $seen, status.rotationCounter ${applied:-none}" >&2
      wrong_rotations=$((wrong_rotations + 1))
    fi
  done
  echo "credentials: $total"
  echo "damage: unsettled $unsettled, no token from their Secret $no_token," \
    "revoked with a Secret $revoked_alive, rotations not applied exactly once $wrong_rotations"
  (( unsettled + no_token + revoked_alive + wrong_rotations == 0 ))
}
