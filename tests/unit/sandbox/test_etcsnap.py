"""The shared /etc snapshots (host/etcsnap.py): made once per content, swept when unused."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from supervisor.sandbox.host import etcsnap, hostlayout, launch
from supervisor.sandbox.host.launch import LaunchRequest
from supervisor.sandbox.wire.mounts import RootSpec
from tests.support.requires import is_root
from tests.support.waiting import wait_for

ENTRIES = (
    ("passwd", "file", b"root:x:0:0::/root:/bin/sh\n"),
    ("localtime", "link", b"/usr/share/zoneinfo/UTC"),
    ("ssl", "dir", b""),
    ("hostname", "empty", b""),
)


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "etc")
    etcsnap._MADE.clear()
    etcsnap._planned.clear()
    etcsnap._last_sweep.clear()
    etcsnap._failed.clear()


def test_a_snapshot_holds_its_entries_read_only_for_others_and_is_made_once(base: str) -> None:
    path = etcsnap.ensure(base, ENTRIES)
    assert os.path.basename(path) == etcsnap.digest(ENTRIES)
    assert Path(path, "passwd").read_bytes() == b"root:x:0:0::/root:/bin/sh\n"
    assert os.readlink(f"{path}/localtime") == "/usr/share/zoneinfo/UTC"
    assert os.path.isdir(f"{path}/ssl") and Path(path, "hostname").read_bytes() == b""
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(f"{path}/passwd").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o700
    before = os.stat(f"{path}/passwd").st_ino
    etcsnap._MADE.clear()  # a later daemon: found on disk, not written again
    assert etcsnap.ensure(base, ENTRIES) == path
    assert os.stat(f"{path}/passwd").st_ino == before
    assert sorted(os.listdir(base)) == [os.path.basename(path)]


def test_new_content_gets_a_new_snapshot_and_the_old_one_goes_once_unused(base: str) -> None:
    old = etcsnap.ensure(base, ENTRIES)
    os.mkdir(f"{base}/{etcsnap.TEMP_PREFIX}x")  # left by a daemon killed while writing
    changed = (("passwd", "file", b"root:x:0:0::/root:/bin/bash\n"), *ENTRIES[1:])
    new = etcsnap.ensure(base, changed)
    assert new != old
    # The old one was named by a plan moments ago (its PID 1 may not have bound it yet).
    assert sorted(os.listdir(base)) == sorted([os.path.basename(old), os.path.basename(new)])
    later = etcsnap._planned[old] + etcsnap.RECENT + 1
    etcsnap._planned[new] = later
    assert etcsnap.sweep(base, later) == [os.path.basename(old)]
    assert os.listdir(base) == [os.path.basename(new)]


@contextlib.contextmanager
def bound_in_own_namespace(source: str | Path, scratch: Path) -> Iterator[None]:
    """`source` bind-mounted in a mount namespace of its own, as a sandbox's /etc is: nothing
    on the host's mount table shows it. Held until the block ends."""
    target, ready = scratch / "target", scratch / "ready"
    target.mkdir(exist_ok=True)
    ready.unlink(missing_ok=True)
    holder = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f'mount --bind "{source}" "{target}" && touch "{ready}" && exec sleep 600'],
    )  # fmt: skip
    try:
        wait_for(lambda: ready.exists() or holder.poll() is not None, 30)
        assert holder.poll() is None
        yield
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.skipif(not is_root(), reason="mounts a snapshot in a mount namespace of its own")
def test_a_snapshot_a_mount_namespace_has_mounted_is_kept(base: str, tmp_path: Path) -> None:
    snap = etcsnap.ensure(base, ENTRIES)
    with bound_in_own_namespace(snap, tmp_path):
        later = etcsnap._planned[snap] + etcsnap.RECENT + 1
        assert etcsnap.in_use(base) == {os.path.basename(snap)}
        assert etcsnap.sweep(base, later) == []
        assert os.path.isdir(snap)
    assert etcsnap.sweep(base, later) == [os.path.basename(snap)]


@pytest.mark.skipif(not is_root(), reason="mounts a snapshot in a mount namespace of its own")
def test_only_this_base_s_snapshots_count_as_shown(base: str, tmp_path: Path) -> None:
    # Another daemon's state dir on the same filesystem holds a snapshot of the same name (it
    # is named by its content): a sandbox showing that one does not keep this one.
    snap = etcsnap.ensure(base, ENTRIES)
    other = tmp_path / "other-state" / "etc"
    other.mkdir(parents=True)
    twin = other / os.path.basename(snap)
    shutil.copytree(snap, twin, symlinks=True)
    with bound_in_own_namespace(twin, tmp_path):
        assert etcsnap.in_use(base) == set()
    # A part of this base's snapshot bound alone keeps the whole snapshot.
    with bound_in_own_namespace(Path(snap) / "ssl", tmp_path):
        assert etcsnap.in_use(base) == {os.path.basename(snap)}


def test_a_state_dir_that_cannot_hold_a_snapshot_gives_copies_and_is_not_retried_at_once(
    base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # E.g. a FUSE state dir that refuses symlinks (ENOSYS): nothing is left half-written, the
    # plan copies the files, and the next launches do not touch the state dir again.
    def refuse(target: str, path: str) -> None:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "symlink", refuse)
    assert etcsnap.ensure(base, ENTRIES) is None
    assert os.listdir(base) == []
    monkeypatch.undo()
    assert etcsnap.ensure(base, ENTRIES) is None, "not retried before RETRY_AFTER"
    etcsnap._failed[base] -= etcsnap.RETRY_AFTER
    assert etcsnap.ensure(base, ENTRIES) == f"{base}/{etcsnap.digest(ENTRIES)}"


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:23 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,mode=755
26 25 0:24 / /run/lock rw shared:6 - tmpfs tmpfs rw
27 22 0:25 / /srv/my\\040disk rw - xfs /dev/sdb1 rw
28 25 0:26 / /run rw - overlay overlay rw
"""


def test_the_filesystem_of_a_path_is_its_nearest_mount_the_last_on_a_point_covering() -> None:
    assert etcsnap.filesystem_type("/var/lib/x", MOUNTINFO) == "ext4"
    assert etcsnap.filesystem_type("/srv/my disk/etc", MOUNTINFO) == "xfs"  # \040 is a space
    assert etcsnap.filesystem_type("/run/lockers", MOUNTINFO) == "overlay"  # not /run/lock
    assert etcsnap.filesystem_type("/run/lock/x", MOUNTINFO) == "tmpfs"
    assert etcsnap.filesystem_type("/x", "garbage\n") is None


def test_kernel_versions_are_read_from_a_release() -> None:
    assert etcsnap.kernel_version("6.1.0-57-amd64") == (6, 1)
    assert etcsnap.kernel_version("6.18.44-fc-v1272") == (6, 18)
    assert etcsnap.kernel_version("5.15-rc3") == (5, 15)
    assert etcsnap.kernel_version("5.15rc3") == (5, 15)  # not 5.153
    assert etcsnap.kernel_version("garbage") == (0, 0)


@pytest.mark.parametrize(
    ("fstype", "release", "idmappable"),
    [
        ("tmpfs", "6.1.0-57-amd64", False),  # Debian 12: a snapshot in /run cannot be held
        ("tmpfs", "6.3.0", True),
        ("ext4", "6.1.0-57-amd64", True),
        ("nfs", "6.18.0", False),  # not one the kernel idmaps
        (None, "6.18.0", False),
    ],
)
def test_a_snapshot_is_idmapped_only_where_the_kernel_can(
    base: str, monkeypatch: pytest.MonkeyPatch, fstype: str | None, release: str, idmappable: bool
) -> None:
    monkeypatch.setattr(etcsnap, "filesystem_type", lambda path: fstype)
    version = etcsnap.kernel_version(release)
    monkeypatch.setattr(etcsnap, "kernel_version", lambda: version)
    monkeypatch.setattr(etcsnap, "_idmappable", {})
    assert etcsnap.can_idmap(base) is idmappable


def test_a_sandbox_in_a_user_namespace_gets_copies_where_no_snapshot_can_be_idmapped(
    base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The systemd VM's kernel (6.1) cannot idmap tmpfs, where /run/sandboxd is: its launch
    # failed to hold the snapshot. Such a sandbox gets copies; one without a user namespace,
    # which binds the snapshot as it is, still shares it.
    spec = RootSpec("host", "web", userns=True)
    host = hostlayout.HostLayout.probe([])
    request = cast(LaunchRequest, SimpleNamespace(etc_dir=base))
    monkeypatch.setattr(etcsnap, "can_idmap", lambda path: False)
    assert launch._with_etc_snapshot(request, spec, host) == (spec, host)
    shared, _ = launch._with_etc_snapshot(request, replace(spec, userns=False), host)
    assert shared.etc_snapshot is not None and shared.etc_snapshot.startswith(base)
    monkeypatch.setattr(etcsnap, "can_idmap", lambda path: True)
    assert launch._with_etc_snapshot(request, spec, host)[0].etc_snapshot == shared.etc_snapshot
