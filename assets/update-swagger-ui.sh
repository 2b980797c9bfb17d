#!/usr/bin/env bash
# Replaces the vendored Swagger UI in assets/swagger-ui with the files the
# explorer serves from the swagger-ui-dist npm package at VERSION, and
# records where they came from and their sha256 sums (a test checks the
# bytes built into the binary against them). Nothing downloads Swagger UI
# at build or run time; this script is the only way it changes.
#   assets/update-swagger-ui.sh 5.35.0
set -euo pipefail
version=${1:?usage: $0 VERSION (a swagger-ui-dist release, e.g. 5.35.0)}
dest=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/swagger-ui
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# npm checks the tarball against the registry's integrity hash.
(cd "$work" && npm pack --json "swagger-ui-dist@$version" > pack.json)
integrity=$(node -e 'console.log(require(process.argv[1])[0].integrity)' "$work/pack.json")
tar -xzf "$work/swagger-ui-dist-$version.tgz" -C "$work"

# The browser bundle with its styles and icons, and the licenses that go
# with them; not the source maps, the ES modules or the standalone preset.
files=(
  swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css
  favicon-32x32.png favicon-16x16.png LICENSE NOTICE package.json
)
rm -rf "$dest"
mkdir -p "$dest"
for f in "${files[@]}"; do
  cp "$work/package/$f" "$dest/$f"
done
printf 'swagger-ui-dist@%s %s\n' "$version" "$integrity" > "$dest/SOURCE"
(cd "$dest" && sha256sum "${files[@]}" > SHA256SUMS)
echo "assets/swagger-ui: swagger-ui-dist $version"
