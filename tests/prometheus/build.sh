#!/usr/bin/env bash
# Builds Prometheus and promtool from their Go module (every service
# discovery left out: the tests scrape static targets) into a cache outside
# the repository, and fetches the CRDs the chart's optional objects need
# from their Go modules beside them: the Gateway API's standard channel
# (sigs.k8s.io/gateway-api), the Prometheus Operator's ServiceMonitor and
# PrometheusRule, and cert-manager's Certificate. The cache is keyed by the versions, so a second run
# with the same inputs is a no-op.
#
# Prints the cache directory (bin/prometheus, bin/promtool, crds/) on
# stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${CATALIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/catalio-operator}
gateway_api=v1.6.3
prometheus_operator=v0.85.0
cert_manager=v1.21.2

key=$( (cat "$here/go.mod" "$here/go.sum"; echo "$gateway_api $prometheus_operator $cert_manager") \
  | sha256sum | cut -c1-16)
out="$cache_root/prometheus/$key"

if [ -x "$out/.complete" ]; then
  echo "$out"
  exit 0
fi

log() { printf 'prometheus: %s\n' "$*" >&2; }
start=$(date +%s)
mkdir -p "$out/bin" "$out/crds"
cd "$here"
log "building prometheus and promtool into $out/bin"
CGO_ENABLED=0 go build -trimpath -tags remove_all_sd -ldflags "-s -w" -o "$out/bin/" \
  github.com/prometheus/prometheus/cmd/prometheus \
  github.com/prometheus/prometheus/cmd/promtool

# The directory of a module version in the module cache.
module_dir() {
  GOFLAGS=-mod=mod go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}
log "fetching the Gateway API $gateway_api CRDs"
dir=$(module_dir "sigs.k8s.io/gateway-api@$gateway_api")
cp "$dir"/config/crd/standard/gateway.networking.k8s.io_*.yaml "$out/crds/"
log "fetching the Prometheus Operator $prometheus_operator CRDs"
dir=$(module_dir "github.com/prometheus-operator/prometheus-operator@$prometheus_operator")
for kind in servicemonitors prometheusrules; do
  cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$out/crds/"
done
log "fetching the cert-manager $cert_manager Certificate CRD"
dir=$(module_dir "github.com/cert-manager/cert-manager@$cert_manager")
cp "$dir/deploy/crds/cert-manager.io_certificates.yaml" "$out/crds/"
chmod -R u+w "$out/crds"

log "done in $(( $(date +%s) - start ))s"
printf '#!/bin/sh\n# marks a finished build\n' > "$out/.complete"
chmod +x "$out/.complete"
echo "$out"
