#!/usr/bin/env bash
# Runs a real, local Kubernetes control plane: etcd, kube-apiserver and
# kube-controller-manager, built by build.sh from upstream modules.
#
#   cluster.sh up DIR [--owner-pid PID] [--crds PATH]
#       Starts the control plane with its state in DIR and prints the
#       kubeconfig path. Does nothing but print it when DIR's control plane is
#       running already. With --owner-pid, a detached watchdog stops the
#       control plane and removes DIR as soon as PID exits, however it exits.
#       With --crds, the CRDs are installed before the controller-manager
#       starts, so its garbage collector watches them from its first sync.
#   cluster.sh down DIR    Stops exactly the processes `up DIR` started.
#   cluster.sh rotate-sa-key DIR
#                          Restarts the API server signing ServiceAccount
#                          tokens with a new key; the old keys still verify.
#   cluster.sh env DIR     Prints shell exports for KUBECONFIG and PATH.
#   cluster.sh leftovers   Waits up to 15s for every test control plane
#                          (under $TMPDIR/catalio-cp.*) to exit; fails and
#                          lists the survivors otherwise.
#
# With CLUSTER_ISSUER=self, the API server is its own ServiceAccount issuer
# (https://ADDRESS:PORT, its discovery document and JWKS served there): an
# outside issuer for another cluster's operator to trust.
#
# tests/node/node.sh runs it inside a node's network namespace with
# CLUSTER_NODE=1: the API server then listens on CLUSTER_ADDRESS:6443, keeps
# the kubernetes Service's endpoints, authorizes kubelets (Node), and the
# controllers and scheduler that run pods start as well.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp_root=${TMPDIR:-/tmp}
address=${CLUSTER_ADDRESS:-127.0.0.1}
node_mode=${CLUSTER_NODE:-}

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Ports are drawn below the kernel's ephemeral range, so no outgoing
# connection can be holding one, and never twice in one start.
# Sets the variable named $1 to a free port.
picked=" "
pick_port() {
  local low port
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  for _ in $(seq 1 200); do
    port=$(( 10000 + RANDOM % (low - 10000) ))
    case $picked in *" $port "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      picked="$picked$port "
      printf -v "$1" '%s' "$port"
      return
    fi
  done
  die "no free port found"
}

# Waits until a URL answers 200, or the process behind PIDFILE dies.
wait_ok() {
  local url=$1 pidfile=$2 what=$3 logfile=$4 i
  shift 4
  for i in $(seq 1 600); do
    if curl -fsS -o /dev/null --max-time 2 "$@" "$url" 2>/dev/null; then
      return 0
    fi
    alive "$pidfile" || { tail -n 30 "$logfile" >&2; die "$what exited during start"; }
    sleep 0.1
  done
  tail -n 30 "$logfile" >&2
  die "$what not ready after 60s"
}

gen_certs() {
  local pki=$1
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout ca.key -out ca.crt -days 3650 -subj "/CN=catalio-test-ca" 2>/dev/null
    issue() { # name subject extensions
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      printf '%s\n' "$3" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -days 3650 -out "$1.crt" -extfile "$1.ext" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    # In a node: also the advertised address and the kubernetes Service's
    # names and cluster IP, which pods use.
    local sans="IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc"
    [ -n "$node_mode" ] && sans="$sans,IP:$address,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc.cluster.local"
    issue apiserver "/CN=kube-apiserver" "subjectAltName=$sans
extendedKeyUsage=serverAuth"
    issue admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    echo sa.key > signing
  )
}

write_kubeconfig() {
  local dir=$1 port=$2
  cat > "$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: catalio-local
  cluster:
    server: https://$address:$port
    certificate-authority: $dir/pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $dir/pki/admin.crt
    client-key: $dir/pki/admin.key
contexts:
- name: catalio-local
  context: {cluster: catalio-local, user: admin, namespace: default}
current-context: catalio-local
EOF
}

cmd_up() {
  local dir=$1 owner="" crds=""
  shift
  while [ $# -gt 0 ]; do
    case $1 in
      --owner-pid) owner=$2; shift 2 ;;
      --crds) crds=$2; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)

  if alive "$dir/apiserver.pid"; then
    log "control plane in $dir is running already"
    echo "$dir/kubeconfig"
    return
  fi
  cmd_down "$dir" 2>/dev/null || true

  local bin started attempt
  bin=$("$here/build.sh")
  started=$(date +%s.%N)
  echo "$bin" > "$dir/bin"
  # A port taken between choosing and binding it fails a start; try again
  # with other ports rather than fail the tests.
  for attempt in 1 2 3; do
    if (start_processes "$dir" "$bin" "$crds"); then
      break
    fi
    cmd_down "$dir"
    [ "$attempt" -lt 3 ] || die "control plane did not start after 3 attempts"
    log "start attempt $attempt failed; retrying with other ports"
  done

  if [ -n "$owner" ]; then
    # Detached from this script and from the owner, so it outlives both.
    setsid bash -c '
      while kill -0 "$1" 2>/dev/null; do sleep 0.2; done
      "$2" down "$3" && rm -rf "$3"
    ' watchdog "$owner" "$here/cluster.sh" "$dir" > /dev/null 2>&1 < /dev/null &
    echo $! > "$dir/watchdog.pid"
  fi

  log "ready in $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s: $(grep -o 'https://[^ ]*' "$dir/kubeconfig")"
  echo "$dir/kubeconfig"
}

# Starts etcd, kube-apiserver and kube-controller-manager; fails (leaving
# pid files for cmd_down) if any of them does not come up.
start_processes() {
  local dir=$1 bin=$2 crds=$3 etcd_port peer_port api_port
  rm -rf "$dir/pki" "$dir/etcd-data"
  gen_certs "$dir/pki" || return 1
  pick_port etcd_port; pick_port peer_port; pick_port api_port
  local node_flags=(--endpoint-reconciler-type none --authorization-mode RBAC)
  if [ -n "$node_mode" ]; then
    api_port=6443
    node_flags=(--endpoint-reconciler-type lease --authorization-mode Node,RBAC
      --kubelet-client-certificate "$dir/pki/admin.crt" --kubelet-client-key "$dir/pki/admin.key"
      --kubelet-preferred-address-types InternalIP)
  fi

  # Each process gets its own session (setsid) so that a Ctrl-C in the shell
  # that ran `make cluster-up` does not reach it; `down` stops it by pid.
  setsid "$bin/etcd" --data-dir "$dir/etcd-data" \
    --listen-client-url "http://127.0.0.1:$etcd_port" \
    --listen-peer-url "http://127.0.0.1:$peer_port" \
    > "$dir/etcd.log" 2>&1 < /dev/null &
  echo $! > "$dir/etcd.pid"
  wait_ok "http://127.0.0.1:$etcd_port/health" "$dir/etcd.pid" etcd "$dir/etcd.log"

  local issuer=https://kubernetes.default.svc.cluster.local
  [ "${CLUSTER_ISSUER:-}" = self ] && issuer=https://$address:$api_port
  {
    printf 'etcd_port=%s\napi_port=%s\nissuer=%s\n' "$etcd_port" "$api_port" "$issuer"
    declare -p node_flags
  } > "$dir/apiserver.env"
  start_apiserver "$dir" "$bin" || return 1

  if [ -n "$crds" ]; then
    # set -e does not reach into a function run as a condition: check each.
    "$bin/kubectl" --kubeconfig "$dir/kubeconfig" apply --server-side -f "$crds" >&2 || return 1
    "$bin/kubectl" --kubeconfig "$dir/kubeconfig" wait --for condition=Established \
      --timeout 60s crd --all >&2 || return 1
  fi

  local kcm_port controllers=garbagecollector,namespace,serviceaccount,clusterrole-aggregation
  local kcm_flags=()
  if [ -n "$node_mode" ]; then
    controllers=$controllers,deployment,replicaset,endpointslice,nodelifecycle,root-ca-cert-publisher,job,disruption,podgc,ttl-after-finished
    kcm_flags=(--root-ca-file "$dir/pki/ca.crt")
  fi
  pick_port kcm_port
  setsid "$bin/kube-controller-manager" \
    --kubeconfig "$dir/kubeconfig" \
    --authentication-kubeconfig "$dir/kubeconfig" \
    --authorization-kubeconfig "$dir/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" \
    --cert-dir "$dir/kcm-certs" \
    --controllers "$controllers" "${kcm_flags[@]}" \
    --leader-elect=false \
    --profiling=false \
    > "$dir/controller-manager.log" 2>&1 < /dev/null &
  echo $! > "$dir/controller-manager.pid"
  wait_ok "https://127.0.0.1:$kcm_port/healthz" "$dir/controller-manager.pid" \
    kube-controller-manager "$dir/controller-manager.log" -k

  [ -n "$node_mode" ] || return 0
  local sched_port
  pick_port sched_port
  setsid "$bin/kube-scheduler" \
    --kubeconfig "$dir/kubeconfig" \
    --authentication-kubeconfig "$dir/kubeconfig" \
    --authorization-kubeconfig "$dir/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$sched_port" \
    --leader-elect=false \
    --profiling=false \
    > "$dir/scheduler.log" 2>&1 < /dev/null &
  echo $! > "$dir/scheduler.pid"
  wait_ok "https://127.0.0.1:$sched_port/healthz" "$dir/scheduler.pid" \
    kube-scheduler "$dir/scheduler.log" -k
}

# Starts kube-apiserver with the ports, issuer and flags of
# DIR/apiserver.env, verifying ServiceAccount tokens with every
# DIR/pki/sa*.pub and signing them with the key DIR/pki/signing names.
start_apiserver() {
  local dir=$1 bin=$2 etcd_port api_port issuer node_flags
  # shellcheck disable=SC1091
  source "$dir/apiserver.env"
  local keys=() key
  for key in "$dir"/pki/sa*.pub; do keys+=(--service-account-key-file "$key"); done
  local discovery=()
  [ "$issuer" = https://kubernetes.default.svc.cluster.local ] ||
    discovery=(--service-account-jwks-uri "$issuer/openid/v1/jwks")
  setsid "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$address" --advertise-address "$address" --secure-port "$api_port" \
    --tls-cert-file "$dir/pki/apiserver.crt" --tls-private-key-file "$dir/pki/apiserver.key" \
    --client-ca-file "$dir/pki/ca.crt" \
    "${node_flags[@]}" \
    --service-account-issuer "$issuer" "${discovery[@]}" \
    "${keys[@]}" \
    --service-account-signing-key-file "$dir/pki/$(cat "$dir/pki/signing")" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/16 \
    --profiling=false \
    >> "$dir/apiserver.log" 2>&1 < /dev/null &
  echo $! > "$dir/apiserver.pid"

  write_kubeconfig "$dir" "$api_port"
  local tls=(--cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key")
  wait_ok "https://$address:$api_port/readyz" "$dir/apiserver.pid" kube-apiserver \
    "$dir/apiserver.log" "${tls[@]}"
}

# A new ServiceAccount signing key: the API server restarts with it, and
# keeps verifying tokens of the old ones.
cmd_rotate_sa_key() {
  local dir n pid
  dir=$(cd "$1" && pwd)
  n=$(find "$dir/pki" -name 'sa*.pub' | wc -l)
  openssl genrsa -out "$dir/pki/sa$n.key" 2048 2>/dev/null
  openssl rsa -in "$dir/pki/sa$n.key" -pubout -out "$dir/pki/sa$n.pub" 2>/dev/null
  echo "sa$n.key" > "$dir/pki/signing"
  pid=$(cat "$dir/apiserver.pid")
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  start_apiserver "$dir" "$(cat "$dir/bin")"
}

cmd_down() {
  local dir=$1 name pidfile pids=()
  # Reverse start order: the controller-manager and the API server go before
  # their storage.
  for name in scheduler controller-manager apiserver etcd; do
    pidfile="$dir/$name.pid"
    if alive "$pidfile"; then
      kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
      pids+=("$(cat "$pidfile")")
    fi
  done
  local i
  for i in $(seq 1 100); do
    local left=()
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left+=("$p"); done
    [ ${#left[@]} -eq 0 ] && break
    [ "$i" -eq 100 ] && kill -KILL "${left[@]}" 2>/dev/null
    sleep 0.1
  done
  rm -f "$dir"/{scheduler,controller-manager,apiserver,etcd}.pid
}

cmd_env() {
  local dir
  dir=$(cd "$1" && pwd)
  [ -f "$dir/bin" ] || die "no control plane in $dir; run 'make cluster-up' first"
  printf 'export KUBECONFIG=%q\n' "$dir/kubeconfig"
  printf 'export PATH=%q:"$PATH"\n' "$(cat "$dir/bin")"
}

cmd_leftovers() {
  local i
  for i in $(seq 1 75); do
    pgrep -f "$tmp_root/catalio-cp\." > /dev/null || return 0
    sleep 0.2
  done
  log "control-plane processes outlived their tests:"
  pgrep -af "$tmp_root/catalio-cp\." >&2
  return 1
}

case ${1:-} in
  up) shift; [ $# -ge 1 ] || die "usage: cluster.sh up DIR [--owner-pid PID] [--crds PATH]"; cmd_up "$@" ;;
  down) [ $# -eq 2 ] || die "usage: cluster.sh down DIR"; cmd_down "$2" ;;
  rotate-sa-key) [ $# -eq 2 ] || die "usage: cluster.sh rotate-sa-key DIR"; cmd_rotate_sa_key "$2" ;;
  env) [ $# -eq 2 ] || die "usage: cluster.sh env DIR"; cmd_env "$2" ;;
  leftovers) cmd_leftovers ;;
  *) die "usage: cluster.sh up|down|rotate-sa-key|env|leftovers ..." ;;
esac
