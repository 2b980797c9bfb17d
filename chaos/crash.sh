#!/usr/bin/env bash
# Crash anywhere: OPS credential operations (creates, with and without a
# rotation grace period; rotations; revocations) against one replica
# (`catalio-operator run`) that is SIGKILLed at KILLS random moments, each
# a random fraction of a second after an operation, so it dies at varied
# points of a reconcile, and started again. Then counts the damage
# (chaos/lib.sh): every credential settled, its Secret's secret gets a
# token, revoked ones have no Secret, and every rotation was applied
# exactly once (no spurious regeneration). The goal is zero of each kind.
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
created=0 rotated=0 revocations=0 restarts=0
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
  choice=$(( RANDOM % 10 ))
  if (( ${#live[@]} < 3 || choice < 4 )); then
    create
  else
    i=$(( RANDOM % ${#live[@]} )); name=${live[$i]}
    if (( choice < 9 )); then
      # A rotation, once the previous one has been applied (two asks before
      # one reconcile are rightly one rotation).
      if [[ $(applied_rotation "$name") == "${rotations[$name]}" ]] && active "$name"; then
        rotations[$name]=$(( ${rotations[$name]} + 1 ))
        kubectl -n "$ns" patch apicred "$name" --type merge \
          -p "{\"spec\":{\"rotation\":{\"counter\":${rotations[$name]}}}}" > /dev/null
        rotated=$((rotated + 1))
      else
        create
      fi
    else
      kubectl -n "$ns" patch apicred "$name" --type merge -p '{"spec":{"revoked":true}}' > /dev/null
      revoked[$name]=1
      unset "live[$i]"; live=("${live[@]}")
      revocations=$((revocations + 1))
    fi
  fi
  if [[ -n ${kill_after[$op]:-} ]]; then
    sleep "0.$(( RANDOM % 10 ))$(( RANDOM % 10 ))"
    kill -9 "$replica_pid"
    wait "$replica_pid" 2> /dev/null || true
    restarts=$((restarts + 1))
    replica
  fi
done
echo "operations: $ops ($created creates, $rotated rotations, $revocations revocations) in $(since "$started")s;" \
  "SIGKILLs and restarts: $restarts; seed $seed"
base=$replica_base
count_damage
