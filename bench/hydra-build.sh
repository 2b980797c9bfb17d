#!/usr/bin/env bash
# Builds ORY Hydra v2.3.0 from the Go module proxy (no other download),
# cached outside the repository; prints the binary's path.
#   bench/hydra-build.sh
set -euo pipefail
version=v2.3.0
cache=${CATALIO_CACHE:-$HOME/.cache/catalio-operator}/hydra-$version
bin=$cache/hydra
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
command -v go > /dev/null || { echo "needs Go" >&2; exit 1; }
command -v gcc > /dev/null || { echo "needs gcc (cgo, for SQLite)" >&2; exit 1; }
mkdir -p "$cache/src"
cd "$cache/src"
[ -f go.mod ] || go mod init catalio.local/hydra-build > /dev/null 2>&1
# Hydra's own go.mod replaces pop with ORY's fork; a module that depends
# on Hydra must say so itself.
go mod edit -replace github.com/gobuffalo/pop/v6=github.com/ory/pop/v6@v6.2.1-0.20241121111754-e5dfc0f3344b
go get -tool "github.com/ory/hydra/v2@$version" >&2
CGO_ENABLED=1 go build -trimpath -tags sqlite,sqlite_omit_load_extension \
  -o "$bin.tmp" github.com/ory/hydra/v2 >&2
mv "$bin.tmp" "$bin"
echo "$bin"
