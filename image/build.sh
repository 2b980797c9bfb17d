#!/usr/bin/env bash
# Builds the operator image as an OCI image layout tarball, with the steps
# the Dockerfile takes and no container engine: the release binary, the root
# filesystem image/rootfs.sh lays out, and the Dockerfile's final-stage
# USER, ENTRYPOINT, CMD and EXPOSE (image/oci.py reads them).
#   image/build.sh OUT.tar [NAME]   NAME defaults to the chart's image and appVersion
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -ge 1 ] || { echo "usage: image/build.sh OUT.tar [NAME]" >&2; exit 2; }
out=$1
version=$(sed -n 's/^appVersion: "\(.*\)"$/\1/p' "$repo/charts/catalio-operator/Chart.yaml")
repository=$(sed -n 's/^  repository: \(.*\)$/\1/p' "$repo/charts/catalio-operator/values.yaml" | head -n 1)
name=${2:-docker.io/$repository:$version}

(cd "$repo" && cargo build --release --locked --bin catalio-operator >&2)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
"$repo/image/rootfs.sh" "$repo/target/release/catalio-operator" "$root/rootfs"
python3 "$repo/image/oci.py" "$root/rootfs" "$out" "$name" --dockerfile "$repo/Dockerfile"
echo "image: $name in $out" >&2
