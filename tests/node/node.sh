#!/usr/bin/env bash
# Runs a real one-node Kubernetes cluster: the control plane of
# tests/controlplane plus kube-scheduler, containerd with Debian's runc,
# kubelet, kube-proxy (nftables), the CNI bridge and a CoreDNS, all inside
# their own network and mount namespace. Only `lo` (with the node's address
# NODE_IP) and the pod bridge exist there: nothing leaves the machine, and
# no host route, firewall rule or sysctl changes. Every process and pod lives
# in cgroups created below this script's own, which `down` empties and
# removes.
#
#   node.sh up DIR [--owner-pid PID]
#       Starts the node with its state in DIR and prints the path of a
#       kubeconfig that reaches its API server from the host (through a
#       relay on 127.0.0.1). With --owner-pid, a detached watchdog runs
#       `down DIR` as soon as PID exits.
#   node.sh import DIR TARBALL   Imports an OCI image layout tarball into the
#                                node's containerd (images are never pulled).
#   node.sh down DIR    Stops every process of the node, then removes its
#                       cgroups; the namespaces and their mounts go with it.
#   node.sh env DIR     Prints shell exports for KUBECONFIG and PATH.
#   node.sh leftovers   Fails, listing them, if any test node's process
#                       or mount (under $TMPDIR/catalio-node.*), or its
#                       cgroup below this process's own, outlived it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
tmp_root=${TMPDIR:-/tmp}
node_name=catalio-node
node_ip=10.200.0.1
pod_cidr=10.244.0.0/24
service_cidr=10.96.0.0/16
dns_ip=10.96.0.10
pause_image=registry.k8s.io/pause:3.10.2
client_image=catalio.test/busybox:1

log() { printf 'node: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# What the node needs from this machine, each named when it is missing.
preflight() {
  [ "$(id -u)" = 0 ] || die "needs root: it creates namespaces, cgroups and mounts"
  local tool missing=()
  for tool in unshare nsenter ip runc nft socat busybox gcc python3 openssl curl; do
    command -v "$tool" > /dev/null || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] ||
    die "missing ${missing[*]} (Debian: apt-get install util-linux iproute2 runc nftables socat busybox-static gcc)"
  # The client image holds busybox and nothing else.
  ! ldd "$(command -v busybox)" > /dev/null 2>&1 ||
    die "$(command -v busybox) is linked dynamically; the client image needs a static one (Debian: busybox-static)"
  unshare --net --mount true 2>/dev/null ||
    die "cannot create network and mount namespaces (needs CAP_SYS_ADMIN and CAP_NET_ADMIN)"
  [ -d /sys/fs/cgroup/memory ] ||
    die "no cgroup v1 memory hierarchy at /sys/fs/cgroup/memory (kubelet runs here on cgroup v1)"
}

# The v1 hierarchies this process is in, as "mountpoint own-path" lines.
own_cgroups() {
  local id controllers path
  while IFS=: read -r id controllers path; do
    [ -n "$controllers" ] || continue # the unified hierarchy
    local mount=/sys/fs/cgroup/${controllers#name=}
    [ -d "$mount" ] || die "cgroup hierarchy $controllers is not at $mount"
    echo "$mount $path"
  done < /proc/self/cgroup
}

# The deepest of those own paths: every hierarchy's node cgroup goes below it.
own_root() { own_cgroups | awk '{print $2}' | sort | tail -n 1; }

# Creates cgroup $1 (a path) in every v1 hierarchy, below this process's own
# cgroup in each, and records every directory it made in DIR/cgroups.
make_cgroups() {
  local dir=$1 root=$2 mount own
  while read -r mount own; do
    case $root/ in "${own%/}/"*) ;; *) die "cgroup $root is not below this process's $own in $mount" ;; esac
    local part path=$mount parts
    IFS=/ read -r -a parts <<< "${root#/}"
    for part in "${parts[@]}"; do
      path=$path/$part
      [ -d "$path" ] && continue
      mkdir "$path"
      echo "$path" >> "$dir/cgroups"
      if [ -f "$path/cpuset.cpus" ]; then
        cat "$(dirname "$path")/cpuset.cpus" > "$path/cpuset.cpus"
        cat "$(dirname "$path")/cpuset.mems" > "$path/cpuset.mems"
      fi
    done
  done < <(own_cgroups)
}

# Every process in the node's cgroups (any hierarchy; pids holds them all).
node_pids() {
  local dir=$1
  [ -f "$dir/cgroups" ] || return 0
  local root
  root=$(cat "$dir/cgroup-root")
  find /sys/fs/cgroup/*/"${root#/}" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u
}

cmd_up() {
  local dir=$1 owner=""
  shift
  while [ $# -gt 0 ]; do
    case $1 in
      --owner-pid) owner=$2; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  preflight
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  # containerd's sockets live in DIR: unix socket paths are limited to 108
  # bytes, and the shims' sockets add about 60.
  [ ${#dir} -le 40 ] || die "DIR $dir is too long for containerd's sockets (at most 40 characters)"
  if alive "$dir/node.pid"; then
    log "node in $dir is running already"
    echo "$dir/kubeconfig"
    return
  fi
  cmd_down "$dir" 2> /dev/null || true

  local cp_bin node_bin started
  cp_bin=$("$repo/tests/controlplane/build.sh")
  node_bin=$("$here/build.sh")
  started=$(date +%s.%N)
  printf '%s\n%s\n' "$cp_bin" "$node_bin" > "$dir/bin"

  # Images the node needs before anything runs: pause (the sandbox) and a
  # busybox for clients. Never pulled: containerd's registry is a dead end.
  mkdir -p "$dir/images/pause" "$dir/images/busybox/bin"
  cp "$node_bin/pause" "$dir/images/pause/pause"
  python3 "$repo/image/oci.py" "$dir/images/pause" "$dir/images/pause.tar" "$pause_image" --entrypoint /pause
  cp "$(command -v busybox)" "$dir/images/busybox/bin/busybox"
  ln -sf busybox "$dir/images/busybox/bin/sh"
  python3 "$repo/image/oci.py" "$dir/images/busybox" "$dir/images/busybox.tar" "$client_image" \
    --entrypoint /bin/busybox
  rm -rf "$dir/images/pause" "$dir/images/busybox"

  local root
  root=$(own_root)
  # Test nodes (under $TMPDIR/catalio-node.*) are told apart from a
  # developer's, so `leftovers` checks only theirs.
  case $dir in "$tmp_root"/catalio-node.*) root="${root%/}/catalio-node-tmp-$$" ;; *) root="${root%/}/catalio-node-$$" ;; esac
  echo "$root" > "$dir/cgroup-root"
  : > "$dir/cgroups"
  make_cgroups "$dir" "$root"

  # The node: a process moved into the node's cgroups, then into new
  # network and mount namespaces, where `inner` starts everything.
  setsid bash -c '
    for procs in /sys/fs/cgroup/*/"${1#/}"/cgroup.procs; do echo $$ > "$procs"; done
    exec unshare --net --mount --propagation private --fork -- "$2" inner "$3"
  ' node "$root" "$here/node.sh" "$dir" > "$dir/node.log" 2>&1 < /dev/null &
  echo $! > "$dir/node.pid"

  if [ -n "$owner" ]; then
    setsid bash -c '
      while kill -0 "$1" 2>/dev/null; do sleep 0.2; done
      "$2" down "$3" && rm -rf "$3"
    ' watchdog "$owner" "$here/node.sh" "$dir" > "$dir/watchdog.log" 2>&1 < /dev/null &
    echo $! > "$dir/watchdog.pid"
  fi

  local i
  for i in $(seq 1 1800); do
    [ -f "$dir/ready" ] && break
    alive "$dir/node.pid" || { tail -n 40 "$dir/node.log" >&2; die "the node exited during start"; }
    [ "$i" -eq 1800 ] && { tail -n 40 "$dir/node.log" >&2; die "the node was not up after 180s"; }
    sleep 0.1
  done

  # The host reaches the API server through a unix socket in DIR that a
  # relay inside the namespace serves.
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  setsid socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$dir/api.sock" \
    > "$dir/relay.log" 2>&1 < /dev/null &
  echo $! > "$dir/relay.pid"
  sed "s#server: https://$node_ip:6443#server: https://127.0.0.1:$port#" "$dir/cp/kubeconfig" \
    > "$dir/kubeconfig"
  local kubectl=("$cp_bin/kubectl" --kubeconfig "$dir/kubeconfig")
  for i in $(seq 1 100); do
    "${kubectl[@]}" get --raw /readyz > /dev/null 2>&1 && break
    [ "$i" -eq 100 ] && die "the API server is not reachable through the relay on 127.0.0.1:$port"
    sleep 0.1
  done
  # kubectl wait fails at once on an object that does not exist yet.
  for i in $(seq 1 600); do
    "${kubectl[@]}" get "node/$node_name" > /dev/null 2>&1 && break
    [ "$i" -eq 600 ] && { tail -n 40 "$dir/kubelet.log" >&2; die "kubelet did not register node $node_name"; }
    sleep 0.1
  done
  "${kubectl[@]}" wait --for=condition=Ready "node/$node_name" --timeout=120s > /dev/null ||
    { tail -n 40 "$dir/kubelet.log" >&2; die "node $node_name did not become Ready"; }
  log "ready in $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s: https://127.0.0.1:$port"
  echo "$dir/kubeconfig"
}

# Runs inside the node's namespaces (and cgroups); started by `up`.
cmd_inner() {
  # Global: the exit trap runs after this function's locals are gone.
  inner_dir=$1
  local dir=$1 cp_bin node_bin
  cp_bin=$(sed -n 1p "$dir/bin")
  node_bin=$(sed -n 2p "$dir/bin")
  export PATH=$node_bin:$cp_bin:$PATH
  echo $$ > "$dir/inner.pid"
  pids=()
  stop() {
    # Kubelet first, so it starts no new pod; the control plane last.
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2> /dev/null || true; done
    wait 2> /dev/null || true
    "$repo/tests/controlplane/cluster.sh" down "$inner_dir/cp" || true
  }
  trap 'stop; exit 0' TERM INT
  trap stop EXIT

  ip link set lo up
  ip addr add "$node_ip/32" dev lo
  # As on any node, its own processes reach Service IPs: a route to decide
  # on before kube-proxy's rules rewrite the destination to a pod.
  ip route add "$service_cidr" dev lo src "$node_ip"
  # Private to this mount namespace: the default state paths of containerd,
  # the CNI plugins and kubelet's pod logs.
  mount -t tmpfs -o mode=0755 tmpfs /run
  mount -t tmpfs -o mode=0755 tmpfs /var/lib
  mount -t tmpfs -o mode=0755 tmpfs /var/log
  # What kubelet would otherwise write to the host kernel: with
  # protectKernelDefaults it only checks these, and sees them here.
  mkdir -p "$dir/sysctl"
  local entry value
  for entry in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
    kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
    value=${entry#*=} entry=${entry%=*}
    echo "$value" > "$dir/sysctl/${entry//\//.}"
    mount --bind "$dir/sysctl/${entry//\//.}" "/proc/sys/$entry"
  done
  # These belong to this network namespace alone: routing between the pod
  # bridge and services, and bridged pod traffic through kube-proxy's rules.
  echo 1 > /proc/sys/net/ipv4/ip_forward
  echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables

  CLUSTER_NODE=1 CLUSTER_ADDRESS=$node_ip "$repo/tests/controlplane/cluster.sh" up "$dir/cp" > /dev/null
  local kubeconfig=$dir/cp/kubeconfig
  socat "UNIX-LISTEN:$dir/api.sock,fork,unlink-early" "TCP:$node_ip:6443" > "$dir/relay-inner.log" 2>&1 &
  pids+=($!)

  # The kubelet's client certificate (Node authorizer and NodeRestriction).
  (
    cd "$dir/cp/pki"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout kubelet.key \
      -out kubelet.csr -subj "/O=system:nodes/CN=system:node:$node_name" 2> /dev/null
    printf 'extendedKeyUsage=clientAuth\n' > kubelet.ext
    openssl x509 -req -in kubelet.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
      -out kubelet.crt -extfile kubelet.ext 2> /dev/null
    rm -f kubelet.csr kubelet.ext
  )
  sed -e "s#pki/admin.crt#pki/kubelet.crt#" -e "s#pki/admin.key#pki/kubelet.key#" \
    -e "s#name: admin#name: kubelet#" -e "s#user: admin#user: kubelet#" "$kubeconfig" \
    > "$dir/kubelet.kubeconfig"

  # containerd: state under DIR, runc from the system, CNI from the build.
  mkdir -p "$dir/certs.d/_default" "$dir/cni/net.d"
  printf 'server = "https://127.0.0.1:9"\n[host."https://127.0.0.1:9"]\n  capabilities = ["pull", "resolve"]\n' \
    > "$dir/certs.d/_default/hosts.toml"
  cat > "$dir/containerd.toml" <<EOF
version = 3
root = "$dir/c/root"
state = "$dir/c/state"
[grpc]
  address = "$dir/c.sock"
[ttrpc]
  address = "$dir/c.sock.ttrpc"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$pause_image"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$dir/certs.d"
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # Without CAP_SYS_RESOURCE (these machines drop it) no process may lower
  # its oom_score_adj: the sandbox's -998 would fail every pod.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "$(command -v runc)"
      Root = "$dir/c/runc"
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$node_bin/cni"]
    conf_dir = "$dir/cni/net.d"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
EOF
  cat > "$dir/cni/net.d/10-pods.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "pods",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {"type": "host-local", "dataDir": "$dir/cni/ipam",
               "ranges": [[{"subnet": "$pod_cidr"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  containerd --config "$dir/containerd.toml" > "$dir/containerd.log" 2>&1 &
  pids+=($!)
  local i
  for i in $(seq 1 300); do
    ctr --address "$dir/c.sock" version > /dev/null 2>&1 && break
    kill -0 "${pids[-1]}" 2> /dev/null || { tail -n 30 "$dir/containerd.log" >&2; die "containerd exited"; }
    [ "$i" -eq 300 ] && die "containerd did not start in 30s"
    sleep 0.1
  done
  ctr --address "$dir/c.sock" -n k8s.io images import --local "$dir/images/pause.tar" > /dev/null
  ctr --address "$dir/c.sock" -n k8s.io images import --local "$dir/images/busybox.tar" > /dev/null

  # Cluster DNS: CoreDNS on the node's address, behind the usual Service.
  cat > "$dir/Corefile" <<EOF
.:53 {
  errors
  ready $node_ip:8181
  kubernetes cluster.local in-addr.arpa ip6.arpa {
    kubeconfig $kubeconfig catalio-local
    pods insecure
  }
  cache 30
}
EOF
  coredns -conf "$dir/Corefile" > "$dir/coredns.log" 2>&1 &
  pids+=($!)
  kubectl --kubeconfig "$kubeconfig" apply -f - > /dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $dns_ip
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-node
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: catalio-node}
addressType: IPv4
endpoints:
- addresses: [$node_ip]
  conditions: {ready: true}
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
EOF

  cat > "$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: $kubeconfig}
hostnameOverride: $node_name
clusterCIDR: $pod_cidr
bindAddress: $node_ip
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [$node_ip/32]
# No conntrack sysctl written: they are the host's.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  kube-proxy --config "$dir/kube-proxy.yaml" > "$dir/kube-proxy.log" 2>&1 &
  pids+=($!)

  cat > "$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $(cat "$dir/cgroup-root")
containerRuntimeEndpoint: unix://$dir/c.sock
address: $node_ip
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $dir/cp/pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$dns_ip]
resolvConf: ""
protectKernelDefaults: true
failSwapOn: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
podLogsDir: $dir/pod-logs
maxPods: 50
EOF
  kubelet --config "$dir/kubelet.yaml" --kubeconfig "$dir/kubelet.kubeconfig" \
    --root-dir "$dir/kubelet" --hostname-override "$node_name" --node-ip "$node_ip" \
    > "$dir/kubelet.log" 2>&1 &
  pids=("$!" "${pids[@]}")

  touch "$dir/ready"
  log "started; logs in $dir"
  wait
}

cmd_import() {
  local dir=$1 tarball node_bin
  # nsenter leaves the working directory behind with the mount namespace.
  tarball=$(realpath "$2")
  node_bin=$(sed -n 2p "$dir/bin")
  alive "$dir/inner.pid" || die "no node running in $dir"
  nsenter -t "$(cat "$dir/inner.pid")" -n -m "$node_bin/ctr" --address "$dir/c.sock" -n k8s.io images import --local "$tarball" >&2
}

cmd_down() {
  local dir=$1 i
  # The node (inside unshare, which does not pass signals on) stops its own
  # processes; whatever is left in its cgroups after 20s (the pods'
  # processes and their shims) is killed.
  for name in relay inner node; do
    alive "$dir/$name.pid" && kill -TERM "$(cat "$dir/$name.pid")" 2> /dev/null || true
  done
  for i in $(seq 1 300); do
    [ -z "$(node_pids "$dir")" ] && break
    [ "$i" -ge 200 ] && node_pids "$dir" | xargs -r kill -KILL 2> /dev/null
    sleep 0.1
  done
  [ -z "$(node_pids "$dir")" ] || die "processes outlived the node: $(node_pids "$dir" | tr '\n' ' ')"
  if [ -f "$dir/cgroups" ]; then
    local root
    root=$(cat "$dir/cgroup-root")
    # Depth first: kubelet's and runc's cgroups (runc also mirrors them in
    # the unified hierarchy), the node's own, then the parents `up` created.
    find /sys/fs/cgroup/*/"${root#/}" -depth -type d -exec rmdir {} + 2> /dev/null || true
    # A parent may hold another node's cgroups too; it stays then.
    tac "$dir/cgroups" | while read -r path; do rmdir "$path" 2> /dev/null || true; done
    local left
    left=$(find /sys/fs/cgroup/*/"${root#/}" -maxdepth 0 -type d 2> /dev/null || true)
    [ -z "$left" ] || die "cgroups could not be removed: $left"
    rm -f "$dir/cgroups"
  fi
  rm -f "$dir"/{node,inner,relay}.pid "$dir/ready"
}

cmd_env() {
  local dir
  dir=$(cd "$1" && pwd)
  [ -f "$dir/kubeconfig" ] || die "no node in $dir; run 'make node-up' first"
  printf 'export KUBECONFIG=%q\n' "$dir/kubeconfig"
  printf 'export PATH=%q:"$PATH"\n' "$(sed -n 1p "$dir/bin")"
}

# Test nodes' cgroups that are left below this process's own cgroup, where
# the nodes this process's children started made theirs. Other cgroups are
# not this run's: on a shared machine they may be another session's.
tmp_node_cgroups() {
  local own
  own=$(own_root)
  find /sys/fs/cgroup/*/"${own#/}" -mindepth 1 -maxdepth 1 -type d -name 'catalio-node-tmp-*' 2> /dev/null || true
}

cmd_leftovers() {
  local i
  for i in $(seq 1 75); do
    if ! pgrep -f "$tmp_root/catalio-node\." > /dev/null &&
      ! grep -q "$tmp_root/catalio-node\." /proc/self/mountinfo &&
      [ -z "$(tmp_node_cgroups)" ]; then
      return 0
    fi
    sleep 0.2
  done
  log "node processes or cgroups outlived their tests:"
  pgrep -af "$tmp_root/catalio-node\." >&2 || true
  grep "$tmp_root/catalio-node\." /proc/self/mountinfo >&2 || true
  tmp_node_cgroups >&2
  local root
  for root in "$tmp_root"/catalio-node.*/cgroup-root; do
    [ -f "$root" ] && log "remove with: $0 down $(dirname "$root")"
  done
  return 1
}

case ${1:-} in
  up) shift; [ $# -ge 1 ] || die "usage: node.sh up DIR [--owner-pid PID]"; cmd_up "$@" ;;
  inner) [ $# -eq 2 ] || die "usage: node.sh inner DIR"; cmd_inner "$2" ;;
  import) [ $# -eq 3 ] || die "usage: node.sh import DIR TARBALL"; cmd_import "$2" "$3" ;;
  down) [ $# -eq 2 ] || die "usage: node.sh down DIR"; cmd_down "$2" ;;
  env) [ $# -eq 2 ] || die "usage: node.sh env DIR"; cmd_env "$2" ;;
  leftovers) cmd_leftovers ;;
  *) die "usage: node.sh up|import|down|env|leftovers ..." ;;
esac
