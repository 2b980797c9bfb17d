#!/usr/bin/env bash
# Builds the real control plane (etcd, kube-apiserver, kube-controller-manager,
# kubectl), the node's Kubernetes parts (kube-scheduler, kubelet, kube-proxy)
# and helm from upstream Go modules, unmodified, into a cache outside
# the repository. The cache is keyed by everything that decides the binaries,
# so a second build with the same inputs is a no-op.
#
# Prints the directory holding the binaries on stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${CATALIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/catalio-operator}

# The versions stamped into the binaries must match the modules in go.mod;
# `kubectl version` and the API server's /version report them.
kube_version=v1.37.2
helm_version=v3.22.0

key=$(cat "$here/go.mod" "$here/go.sum" "$here/etcd/main.go" \
  "$here/helm/go.mod" "$here/helm/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)
bin="$cache_root/controlplane/$key/bin"

if [ -x "$bin/.complete" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
log() { printf 'controlplane: %s\n' "$*" >&2; }

kv=k8s.io/component-base/version
kube_ldflags="-s -w \
  -X $kv.gitVersion=$kube_version \
  -X $kv.gitMajor=$(echo "$kube_version" | cut -d. -f1 | tr -d v) \
  -X $kv.gitMinor=$(echo "$kube_version" | cut -d. -f2) \
  -X $kv.gitTreeState=clean \
  -X $kv.buildDate=1970-01-01T00:00:00Z \
  -X k8s.io/client-go/pkg/version.gitVersion=$kube_version"

start=$(date +%s)
cd "$here"
log "building etcd and the Kubernetes $kube_version binaries into $bin"
# One `go build` for all of them lets the toolchain share compiled packages.
CGO_ENABLED=0 go build -trimpath -ldflags "$kube_ldflags" -o "$bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy \
  k8s.io/kubernetes/cmd/kubectl \
  ./etcd

log "building helm $helm_version"
cd "$here/helm"
CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version" \
  -o "$bin/helm" helm.sh/helm/v3/cmd/helm

log "built in $(( $(date +%s) - start ))s"
printf '#!/bin/sh\n# marks a finished build\n' > "$bin/.complete"
chmod +x "$bin/.complete"
echo "$bin"
