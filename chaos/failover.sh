#!/usr/bin/env bash
# Leader failover under load: two replicas (`catalio-operator run`) on the
# real control plane; KILLS times, a burst of credential changes (new
# credentials and rotations) is applied and the leader is SIGKILLed at once.
# Prints per kill how long until the other replica held the lease and until
# a credential created right after the kill was Active (a fresh replica
# replaces the dead one); then counts the damage (chaos/lib.sh), whose goal
# is zero of each kind.
#   chaos/failover.sh [KILLS] [LEASE_DURATION]
kills=${1:-5}
lease=${2:-3s}
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
done

echo
echo "kills: $kills; lease duration: $lease"
for p in "${!replicas[@]}"; do base=${replicas[$p]}; break; done
count_damage
