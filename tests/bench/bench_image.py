"""Image roots: the first start of a ~50 MB image (unpack included) vs `umoci unpack` of the same
image, and a later start (layers in the store) vs a plain launch with `overlay = true`.

    sudo .venv/bin/python -m tests.bench.bench_image [-n 20]

The image is the example busybox image (scripts/build-example-image.sh) plus a third layer of
48 MiB of random bytes (incompressible, so the gzip blob is ~48 MiB too). "First start" is the
daemon's path: the unpack helper process (`python -m supervisor.images unpack`, digests checked)
into an empty store, then the launch of `busybox true` on the layers; umoci unpacks the same layout
into a runtime bundle (it verifies digests too). Both start from a warm page cache. Later starts
find the layers and launch at once; they are compared with a launch of the same rootfs (umoci's
unpacked copy) as a directory with `overlay = true`, each with its own upper directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from supervisor.sandbox.host import imagefetch
from supervisor.sandbox.host.launch import LaunchRequest, launch
from supervisor.unit.loader import parse_unit
from supervisor.unit.spec import UnitSpec
from tests.support import harness
from tests.support.images import build_busybox

BLOB = 48 << 20


def big_image(layout: Path) -> str:
    ref = build_busybox(layout, "big")
    with tempfile.TemporaryDirectory() as work:
        bundle = Path(work) / "b"
        subprocess.run(["umoci", "unpack", "--image", ref, str(bundle)], check=True,
                       capture_output=True)  # fmt: skip
        (bundle / "rootfs" / "blob").write_bytes(os.urandom(BLOB))
        subprocess.run(["umoci", "repack", "--image", ref, str(bundle)], check=True,
                       capture_output=True)  # fmt: skip
    return ref


def image_spec(ref: str) -> UnitSpec:
    text = (
        f'[service]\nexec = ["/bin/busybox", "true"]\nuser = "root"\n[sandbox]\nimage = "{ref}"\n'
    )
    return parse_unit("/bench/img.toml", "img", text.encode())


def dir_spec(root: str) -> UnitSpec:
    text = (
        f'[service]\nexec = ["/bin/busybox", "true"]\nuser = "root"\n'
        f'[sandbox]\nroot = "{root}"\noverlay = true\nread_only = false\n'
    )
    return parse_unit("/bench/dir.toml", "dir", text.encode())


def run_once(req: LaunchRequest) -> None:
    launched = launch(req)
    launched.go()
    _, status = os.waitpid(launched.pid, 0)
    assert status == 0, status


def timed_launch(spec: UnitSpec, null: int, **kw: object) -> float:
    t0 = time.perf_counter()
    with harness.v1_cgroup(memory_max=256 << 20, pids_max=256) as procs:
        ids = harness.id_map_for(spec)
        run_once(LaunchRequest(spec, procs, null, null, id_map=ids, **kw))  # type: ignore[arg-type]
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="launches per side (default 20)")
    parser.add_argument("--unpacks", type=int, default=3, help="unpacks per side (default 3)")
    args = parser.parse_args()
    harness.set_subreaper()
    work = Path(tempfile.mkdtemp(prefix="bench-image-"))
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        ref = big_image(work / "layout")
        spec = image_spec(ref)
        size = sum(p.stat().st_size for p in (work / "layout" / "blobs").rglob("*"))
        print(f"image {ref}: {spec.image and len(spec.image.layers)} layers, "
              f"{size / 2**20:.0f} MiB of blobs")  # fmt: skip
        first, umoci = [], []
        for i in range(args.unpacks):
            store = work / f"store{i}"
            store.mkdir()
            t0 = time.perf_counter()
            layers = asyncio.run(imagefetch.ensure_layers(str(store / "images"), spec))
            with harness.v1_cgroup(memory_max=256 << 20, pids_max=256) as procs:
                ids = harness.id_map_for(spec)
                run_once(LaunchRequest(spec, procs, null, null, image_layers=layers, id_map=ids))
            first.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            subprocess.run(["umoci", "unpack", "--image", ref, str(work / f"bundle{i}")],
                           check=True, capture_output=True)  # fmt: skip
            umoci.append((time.perf_counter() - t0) * 1000)
            if i:  # keep one store and one bundle for the launches below
                shutil.rmtree(store)
                shutil.rmtree(work / f"bundle{i}")
        print(f"first start (unpack + launch): median {statistics.median(first):.0f} ms")
        print(f"umoci unpack:                  median {statistics.median(umoci):.0f} ms "
              f"(ratio {statistics.median(first) / statistics.median(umoci):.2f})")  # fmt: skip
        layers = asyncio.run(imagefetch.ensure_layers(str(work / "store0" / "images"), spec))
        rootfs = str(work / "bundle0" / "rootfs")
        dspec = dir_spec(rootfs)
        later, plain = [], []
        for i in range(args.n):
            overlay = work / "ovl" / str(i)
            later.append(timed_launch(spec, null, image_layers=layers))
            plain.append(timed_launch(dspec, null, overlay_dir=str(overlay)))
        m_later, m_plain = statistics.median(later), statistics.median(plain)
        print(f"later start (layers stored):   median {m_later:.1f} ms")
        print(f"dir root with overlay = true:  median {m_plain:.1f} ms "
              f"(ratio {m_later / m_plain:.2f})")  # fmt: skip
    finally:
        os.close(null)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
