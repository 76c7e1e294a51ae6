"""The shared /etc snapshots (host/etcsnap.py): made once per content, swept when unused."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.sandbox.host import etcsnap
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


@pytest.mark.skipif(not is_root(), reason="mounts a snapshot in a mount namespace of its own")
def test_a_snapshot_a_mount_namespace_has_mounted_is_kept(base: str, tmp_path: Path) -> None:
    snap = etcsnap.ensure(base, ENTRIES)
    target = tmp_path / "target"
    target.mkdir()
    ready = tmp_path / "ready"
    # A sandbox's /etc, in its own mount namespace: nothing on the host's mount table shows it.
    holder = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f'mount --bind "{snap}" "{target}" && touch "{ready}" && exec sleep 600'],
    )  # fmt: skip
    try:
        wait_for(lambda: ready.exists() or holder.poll() is not None, 30)
        assert holder.poll() is None
        later = etcsnap._planned[snap] + etcsnap.RECENT + 1
        assert etcsnap.in_use(base) == {os.path.basename(snap)}
        assert etcsnap.sweep(base, later) == []
        assert os.path.isdir(snap)
    finally:
        holder.kill()
        holder.wait()
    assert etcsnap.sweep(base, later) == [os.path.basename(snap)]


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
