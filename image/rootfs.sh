#!/usr/bin/env bash
# Lays out the operator image's root filesystem in DIR: the release binary,
# the shared libraries it links (what distroless/cc holds), CA certificates
# and a passwd/group naming the non-root user 65532. Used by the Dockerfile
# and by image/oci.py (the node test), so the image is described once.
#   image/rootfs.sh BINARY DIR
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: image/rootfs.sh BINARY DIR" >&2; exit 2; }
binary=$1 root=$2
[ -x "$binary" ] || { echo "rootfs: $binary is not an executable" >&2; exit 1; }

rm -rf "$root"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$binary" "$root/usr/local/bin/catalio-operator"

# Every library the dynamic loader resolves, the loader itself included, at
# the path it was found (symlinks resolved to the file they name).
ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u |
  while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done

if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
