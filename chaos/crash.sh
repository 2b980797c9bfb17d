#!/usr/bin/env bash
# Crash anywhere: OPS credential operations (creates, with and without a
# rotation grace period; rotations; revocations; Secret deletions; hand
# edits of a Secret, harmless ones and overwritten secrets) against one replica
# (`catalio-operator run`) that is SIGKILLed at KILLS random moments, each
# a random fraction of a second after an operation, so it dies at varied
# points of a reconcile, and started again. Then counts the damage
# (chaos/lib.sh): every credential settled, its Secret's secret gets a
# token, revoked ones have no Secret, and every rotation was applied
# exactly once and a secret changed only when asked (no spurious
# regeneration). The goal is zero of each kind.
#   chaos/crash.sh [OPS] [KILLS] [SEED]
ops=${1:-100}
kills=${2:-10}
seed=${3:-1}
lease=3s
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RANDOM=$seed

# The operations after which the replica is killed: KILLS distinct ones.
declare -A kill_after=()
while (( ${#kill_after[@]} < kills && ${#kill_after[@]} < ops )); do
  kill_after[$(( RANDOM % ops ))]=1
done

replica
live=()
created=0 rotated=0 revocations=0 deletions=0 harmless=0 overwritten=0 restarts=0
create() {
  local name grace=""
  name=cred-$created; created=$((created + 1))
  (( RANDOM % 2 )) && grace="rotation: {gracePeriod: 10s}"
  credential "$name" "$grace" | kubectl -n "$ns" apply -f - > /dev/null
  rotations[$name]=0
  live+=("$name")
}
started=$(now)
for op in $(seq 0 $((ops - 1))); do
  choice=$(( RANDOM % 20 ))
  # Changes go to a credential whose earlier changes have all happened (two
  # asks before one reconcile are rightly one change): one of three picked
  # at random, or else a create.
  name=""
  if (( ${#live[@]} >= 3 && choice >= 7 )); then
    for _ in 1 2 3; do
      i=$(( RANDOM % ${#live[@]} ))
      settled "${live[$i]}" && { name=${live[$i]}; break; }
    done
  fi
  if [[ -z $name ]]; then
    create
  elif (( choice < 13 )); then
    rotations[$name]=$(( ${rotations[$name]} + 1 ))
    kubectl -n "$ns" patch apicred "$name" --type merge \
      -p "{\"spec\":{\"rotation\":{\"counter\":${rotations[$name]}}}}" > /dev/null
    rotated=$((rotated + 1))
  elif (( choice < 15 )); then
    kubectl -n "$ns" patch apicred "$name" --type merge -p '{"spec":{"revoked":true}}' > /dev/null
    revoked[$name]=1
    unset "live[$i]"; live=("${live[@]}")
    revocations=$((revocations + 1))
  elif (( choice < 17 )); then
    # Lost: the operator makes a new secret.
    kubectl -n "$ns" delete secret "$name" --wait=false > /dev/null
    replaced[$name]=$(( ${replaced[$name]:-0} + 1 ))
    deletions=$((deletions + 1))
  elif (( choice < 18 )); then
    # A secret someone wrote by hand is replaced: the edit, then a new one.
    kubectl -n "$ns" patch secret "$name" --type merge \
      -p "{\"data\":{\"client_secret\":\"$(printf 'hand-%s-%s' "$op" "$RANDOM" | base64)\"}}" > /dev/null
    replaced[$name]=$(( ${replaced[$name]:-0} + 2 ))
    overwritten=$((overwritten + 1))
  else
    # A label and a data key of someone else's: nothing to regenerate.
    kubectl -n "$ns" patch secret "$name" --type merge \
      -p "{\"metadata\":{\"labels\":{\"team\":\"t$op\"}},\"data\":{\"note\":\"$(echo "op $op" | base64)\"}}" > /dev/null
    harmless=$((harmless + 1))
  fi
  if [[ -n ${kill_after[$op]:-} ]]; then
    sleep "0.$(( RANDOM % 10 ))$(( RANDOM % 10 ))"
    kill -9 "$replica_pid"
    wait "$replica_pid" 2> /dev/null || true
    restarts=$((restarts + 1))
    replica
  fi
done
echo "operations: $ops ($created creates, $rotated rotations, $revocations revocations," \
  "$deletions Secrets deleted, $overwritten secrets overwritten, $harmless harmless Secret edits)" \
  "in $(since "$started")s; SIGKILLs and restarts: $restarts; seed $seed"
base=$replica_base
count_damage
