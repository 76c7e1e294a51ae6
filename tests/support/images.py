"""Images for tests: real ones built with umoci and skopeo (the repo's own build script), and
hand-made OCI layouts whose layer tarballs are written here with tarfile, for hostile content.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "scripts" / "build-example-image.sh"

requires_image_tools = pytest.mark.skipif(
    not (shutil.which("umoci") and Path("/bin/busybox").exists()),
    reason="needs umoci and busybox-static (scripts/setup.sh installs them)",
)
# Only the docker-archive form needs skopeo: the v2 VM's image cannot hold it (scripts/test-v2.sh).
requires_skopeo = pytest.mark.skipif(
    not shutil.which("skopeo"), reason="needs skopeo (scripts/setup.sh installs it)"
)


def build_busybox(layout: Path, tag: str = "latest") -> str:
    """The two-layer busybox image of scripts/build-example-image.sh at `layout:tag`."""
    subprocess.run([str(BUILD), str(layout), tag], check=True, capture_output=True)
    return f"{layout}:{tag}"


def to_archive(layout_ref: str, archive: Path) -> str:
    """`skopeo copy oci:... docker-archive:...`: the `docker save` form of the image."""
    subprocess.run(
        ["skopeo", "copy", "--quiet", f"oci:{layout_ref}", f"docker-archive:{archive}"],
        check=True,
        capture_output=True,
    )
    return f"docker-archive:{archive}"


def tar_bytes(add: Callable[[tarfile.TarFile], None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar)
    return buf.getvalue()


def add_file(tar: tarfile.TarFile, name: str, data: bytes = b"x", mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def add_entry(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 8, 0
    tar.addfile(info)


def _blob(layout: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest[7:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def write_layout(
    layout: Path,
    layers: list[bytes],
    tag: str = "latest",
    config: dict[str, object] | None = None,
) -> str:
    """An OCI image layout with these uncompressed layer tars, digests all correct."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    diff_ids = [_blob(layout, layer) for layer in layers]
    conf = {
        "architecture": "amd64",
        "os": "linux",
        "config": config or {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    conf_bytes = json.dumps(conf).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _blob(layout, conf_bytes),
            "size": len(conf_bytes),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(b)}
            for d, b in zip(diff_ids, layers, strict=True)
        ],
    }
    man_bytes = json.dumps(manifest).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": manifest["mediaType"],
                "digest": _blob(layout, man_bytes),
                "size": len(man_bytes),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return f"{layout}:{tag}"
