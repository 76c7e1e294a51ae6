"""The layer store on the real kernel: what a layer becomes on disk (owners, modes, links,
whiteouts, opaque directories) and what overlayfs then shows of the stacked layers."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from supervisor.images.oci import read_image
from supervisor.images.reference import parse_ref
from supervisor.images.store import LayerStore
from tests.support.images import add_entry, add_file, tar_bytes, write_layout
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, pytest.mark.cgroup_v2, requires_root]


def _owned(tar: tarfile.TarFile, name: str, mode: int, uid: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uid, info.gid = 2, mode, uid, uid
    tar.addfile(info, io.BytesIO(b"ok"))


def test_layers_on_disk_and_merged(tmp_path: Path) -> None:
    def base(t: tarfile.TarFile) -> None:
        add_file(t, "etc/keep", b"kept")
        add_file(t, "etc/gone", b"deleted above")
        add_file(t, "cache/old", b"hidden by the opaque directory above")
        _owned(t, "bin/su", 0o4755, 0)
        _owned(t, "home/app/file", 0o640, 1000)
        add_entry(t, "bin/sh", tarfile.SYMTYPE, "/bin/busybox")
        add_entry(t, "bin/su-link", tarfile.LNKTYPE, "bin/su")
        add_entry(t, "run/fifo", tarfile.FIFOTYPE)

    def top(t: tarfile.TarFile) -> None:
        add_file(t, "etc/.wh.gone", b"")
        add_file(t, "cache/.wh..wh..opq", b"")
        add_file(t, "cache/new", b"new")

    ref = write_layout(tmp_path / "img", [tar_bytes(base), tar_bytes(top)])
    (tmp_path / "data").mkdir()
    store = LayerStore(str(tmp_path / "data" / "images"))
    lower, upper = (Path(p) for p in store.ensure(read_image(parse_ref(ref))))
    su = (lower / "bin" / "su").stat()
    assert (stat.S_IMODE(su.st_mode), su.st_uid) == (0o4755, 0)
    assert (lower / "bin" / "su-link").stat().st_ino == su.st_ino  # a hardlink in the layer
    app = (lower / "home" / "app" / "file").stat()
    assert (stat.S_IMODE(app.st_mode), app.st_uid, app.st_gid) == (0o640, 1000, 1000)
    assert os.readlink(lower / "bin" / "sh") == "/bin/busybox"  # kept as written, not followed
    assert stat.S_ISFIFO((lower / "run" / "fifo").lstat().st_mode)
    whiteout = (upper / "etc" / "gone").lstat()
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == os.makedev(0, 0)
    assert os.getxattr(upper / "cache", "trusted.overlay.opaque") == b"y"

    # What a sandbox sees: the layers stacked by overlayfs, in a throwaway mount namespace.
    merged, work, up = tmp_path / "merged", tmp_path / "work", tmp_path / "upper"
    for d in (merged, work, up):
        d.mkdir()
    script = (
        f"mount -t overlay overlay -o lowerdir={upper}:{lower},upperdir={up},workdir={work} "
        f"{merged} && cd {merged} && ls etc cache"
    )
    out = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.split() == ["cache:", "new", "etc:", "keep"]  # ls sorts its arguments


def test_a_layer_is_unpacked_once(tmp_path: Path) -> None:
    shared = tar_bytes(lambda t: add_file(t, "lib/base", b"base"))
    one = write_layout(tmp_path / "one", [shared, tar_bytes(lambda t: add_file(t, "a", b"1"))])
    two = write_layout(tmp_path / "two", [shared, tar_bytes(lambda t: add_file(t, "b", b"2"))])
    (tmp_path / "data").mkdir()
    store = LayerStore(str(tmp_path / "data" / "images"))
    first = store.ensure(read_image(parse_ref(one)))
    inode = (Path(first[0]) / "lib" / "base").stat().st_ino
    second = store.ensure(read_image(parse_ref(two)))
    assert second[0] == first[0] and (Path(second[0]) / "lib" / "base").stat().st_ino == inode
    assert len(store.stored()) == 3
