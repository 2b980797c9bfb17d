#!/usr/bin/env bash
# Builds the parts of a real node that do not come from the k8s.io/kubernetes
# module (kubelet, kube-proxy and kube-scheduler are built with the control
# plane): containerd and its runc shim, the CNI plugins, a CoreDNS with only
# the plugins cluster DNS needs, and the pause binary from the kubernetes
# module's own source. All from upstream modules, unmodified, into a cache
# outside the repository keyed by everything that decides the binaries.
# runc itself is Debian's (.ci/run installs it).
#
# Prints the directory holding the binaries on stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${CATALIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/catalio-operator}
# The pause source comes from the same module as the control plane.
kube_version=v1.37.2

key=$(cat "$here/go.mod" "$here/go.sum" "$here/coredns/main.go" "$here/build.sh" \
  | sha256sum | cut -c1-16)
bin="$cache_root/node/$key/bin"

if [ -x "$bin/.complete" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin/cni"
log() { printf 'node: %s\n' "$*" >&2; }
start=$(date +%s)
cd "$here"

log "building containerd, its shim and ctr into $bin"
# Only btrfs, devmapper and zfs snapshotters need cgo; the node uses overlayfs.
tags="no_btrfs no_devmapper no_zfs urfave_cli_no_docs"
CGO_ENABLED=0 go build -trimpath -tags "$tags" -ldflags "-s -w" -o "$bin/" \
  github.com/containerd/containerd/v2/cmd/containerd \
  github.com/containerd/containerd/v2/cmd/ctr
CGO_ENABLED=0 go build -trimpath -tags "$tags no_grpc" -ldflags "-s -w" -o "$bin/" \
  github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2

log "building the CNI plugins and CoreDNS"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/cni/" \
  github.com/containernetworking/plugins/plugins/main/bridge \
  github.com/containernetworking/plugins/plugins/main/loopback \
  github.com/containernetworking/plugins/plugins/ipam/host-local \
  github.com/containernetworking/plugins/plugins/meta/portmap
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/coredns" ./coredns

log "building pause from k8s.io/kubernetes@$kube_version"
src=$(cd "$here/../controlplane" && go mod download -json "k8s.io/kubernetes@$kube_version" \
  | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
gcc -Os -static -o "$bin/pause" "$src/build/pause/linux/pause.c"

log "built in $(( $(date +%s) - start ))s"
printf '#!/bin/sh\n# marks a finished build\n' > "$bin/.complete"
chmod +x "$bin/.complete"
echo "$bin"
