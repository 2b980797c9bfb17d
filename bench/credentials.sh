#!/usr/bin/env bash
# Time from `kubectl apply` of N credentials to all of them Ready, and the
# API writes the operator made per credential (from kube-apiserver's own
# apiserver_request_total, so nothing is estimated).
#   bench/credentials.sh [N]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
n=${1:-1000}

writes() { # total write requests to what the operator writes
  kubectl get --raw /metrics | awk '
    /^apiserver_request_total\{/ && /verb="(POST|PUT|PATCH|APPLY|DELETE)"/ {
      if ($0 ~ /resource="secrets"/ || $0 ~ /resource="events"/ ||
          ($0 ~ /resource="apicredentials"/ && $0 ~ /subresource="status"/)) s += $NF
    }
    END { printf "%d", s }'
}

kubectl create namespace bench > /dev/null
"$operator" controller --watch-namespaces bench --namespace bench \
  --admin-listen "127.0.0.1:$(free_port)" 2> /tmp/bench-controller.log &
pids+=($!)
sleep 1
manifest=$(mktemp)
for i in $(seq 1 "$n"); do
  printf -- '---\napiVersion: catalio.ai/v1\nkind: ApiCredential\nmetadata: {name: cred-%d}\nspec: {displayName: "Credential %d"}\n' "$i" "$i"
done > "$manifest"

before=$(writes)
start=$(date +%s.%N)
kubectl -n bench apply --server-side -f "$manifest" > /dev/null
applied=$(date +%s.%N)
until [ "$(kubectl -n bench get apicred -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c '^Active$')" -ge "$n" ]; do
  sleep 0.5
done
ready=$(date +%s.%N)
sleep 3 # let trailing writes (if any) land before counting
after=$(writes)
secrets=$(kubectl -n bench get secrets -l app.kubernetes.io/managed-by=catalio-operator -o name | wc -l)

awk -v n="$n" -v s="$start" -v a="$applied" -v r="$ready" -v w=$((after - before)) -v sec="$secrets" 'BEGIN {
  printf "credentials: %d (Secrets written: %d)\n", n, sec
  printf "kubectl apply took: %.1fs\n", a - s
  printf "apply start to all Active: %.1fs (%.0f credentials/s)\n", r - s, n / (r - s)
  printf "API writes by the operator: %d (%.2f per credential: Secret, status, event)\n", w, w / n
}'
