#!/usr/bin/env python3
"""Writes an OCI image layout tarball from a root filesystem directory, with
no container engine and no registry: one gzip layer, a config, a manifest and
an index whose manifest carries the image name that `ctr images import` uses.

    image/oci.py ROOTFS OUT.tar NAME [--dockerfile PATH | --entrypoint ARG...]

With --dockerfile, USER, ENTRYPOINT, CMD and EXPOSE come from the last stage
of that Dockerfile, so the node test runs the image the Dockerfile describes.
Byte-for-byte reproducible: sorted entries, zero mtimes, root ownership."""

import gzip
import hashlib
import io
import json
import os
import re
import sys
import tarfile


def last_stage(dockerfile):
    """USER, ENTRYPOINT, CMD and EXPOSE of the Dockerfile's final stage."""
    config = {}
    for line in open(dockerfile, encoding="utf-8"):
        line = line.strip()
        if line.startswith("FROM "):
            config = {}
        m = re.match(r"(USER|ENTRYPOINT|CMD|EXPOSE)\s+(.*)", line)
        if not m:
            continue
        word, rest = m.groups()
        if word == "USER":
            config["User"] = rest
        elif word == "EXPOSE":
            config["ExposedPorts"] = {f"{p}/tcp": {} for p in rest.split()}
        else:
            config[word.capitalize() if word == "CMD" else "Entrypoint"] = json.loads(rest)
    if "Entrypoint" not in config:
        sys.exit(f"oci.py: no ENTRYPOINT in the last stage of {dockerfile}")
    return config


def layer(rootfs):
    """The root filesystem as an uncompressed tar, deterministically."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for top, dirs, files in os.walk(rootfs):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                path = os.path.join(top, name)
                info = tar.gettarinfo(path, os.path.relpath(path, rootfs))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isfile():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return raw.getvalue()


def blob(tar, data, media_type):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest.split(":")[1])
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def main(argv):
    if len(argv) < 5 or argv[3] not in ("--dockerfile", "--entrypoint"):
        sys.exit(__doc__)
    rootfs, out, name = argv[0], argv[1], argv[2]
    if argv[3] == "--dockerfile":
        config = last_stage(argv[4])
    else:
        config = {"Entrypoint": argv[4:]}
    diff = layer(rootfs)
    gz = gzip.compress(diff, mtime=0)
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(diff).hexdigest()]},
    }
    with tarfile.open(out, "w") as tar:
        layer_desc = blob(tar, gz, "application/vnd.oci.image.layer.v1.tar+gzip")
        config_desc = blob(tar, json.dumps(image_config, sort_keys=True).encode(),
                           "application/vnd.oci.image.config.v1+json")
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": config_desc, "layers": [layer_desc]}
        manifest_desc = blob(tar, json.dumps(manifest, sort_keys=True).encode(),
                             "application/vnd.oci.image.manifest.v1+json")
        manifest_desc["annotations"] = {
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
        }
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [manifest_desc]}
        for path, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                           ("index.json", json.dumps(index, sort_keys=True).encode())):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main(sys.argv[1:])
