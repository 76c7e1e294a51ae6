"""The launch's probe of paths that change only through their directory or a mount
(sandbox/host/settledprobe.py), on the real kernel: inotify and the mount table's poll.

Each test watches directories of its own under tmp_path (never the host's /etc or /usr,
which other processes share), with the launch's own per-path probe (hostlayout._probe), and
unmounts what it mounted.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.linux.syscalls import MS_RDONLY
from supervisor.sandbox.host import hostlayout
from supervisor.sandbox.host.settledprobe import SettledProbe
from tests.support.requires import requires_root

pytestmark = requires_root


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Path, Path, SettledProbe[hostlayout.HostPath]]]:
    """A top directory with a subdirectory `sub` and a link `link`, and an etc-like directory
    with a copied `passwd`; the probe over both."""
    top, etc = tmp_path / "top", tmp_path / "etc"
    (top / "sub").mkdir(parents=True)
    (top / "link").symlink_to("sub")
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    probe = SettledProbe(
        {str(top): ("sub", "link", "absent"), str(etc): ("passwd",)}, str(etc), hostlayout._probe
    )
    try:
        yield top, etc, probe
    finally:
        probe.close()
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", str(top / "sub")], check=True, capture_output=True)


def test_an_unchanged_host_is_probed_once(watched: tuple[Path, Path, SettledProbe]) -> None:
    top, _, probe = watched
    first = probe.entries()
    for _ in range(5):
        assert probe.entries() is first
    assert probe.probes == 1
    assert first[str(top / "sub")] == hostlayout.HostPath(
        "dir", flags=first[str(top / "sub")].flags
    )
    assert first[str(top / "link")] == hostlayout.HostPath("link", "sub")
    assert first[str(top / "absent")] is None


def test_a_vanished_path_is_seen_at_the_next_probe(
    watched: tuple[Path, Path, SettledProbe],
) -> None:
    # What makes the launch fail with its clear error when a bind source's directory went.
    top, _, probe = watched
    assert probe.entries()[str(top / "sub")] is not None
    (top / "sub").rmdir()
    assert probe.entries()[str(top / "sub")] is None
    (top / "absent").mkdir()
    assert probe.entries()[str(top / "absent")] is not None
    os.replace(top / "absent", top / "sub")  # renamed over: both names change
    after = probe.entries()
    assert after[str(top / "absent")] is None and after[str(top / "sub")] is not None


def test_a_link_swapped_in_is_seen(watched: tuple[Path, Path, SettledProbe]) -> None:
    top, _, probe = watched
    probe.entries()
    (top / "link").unlink()
    (top / "link").symlink_to("/")
    assert probe.entries()[str(top / "link")] == hostlayout.HostPath("link", "/")


def test_a_copied_file_written_anywhere_is_copied_again(
    watched: tuple[Path, Path, SettledProbe], tmp_path: Path
) -> None:
    _, etc, probe = watched
    passwd = str(etc / "passwd")
    assert probe.entries()[passwd].data == b"root:x:0:0::/root:/bin/sh\n"
    with open(passwd, "a") as f:  # in place, through the watched directory
        f.write("app:x:1000:1000::/home/app:/bin/sh\n")
    assert b"app:x:1000" in probe.entries()[passwd].data
    # Through another hard link to the same file, which the directory's watch does not see.
    other = tmp_path / "elsewhere"
    os.link(passwd, other)
    with open(other, "a") as f:
        f.write("web:x:1001:1001::/home/web:/bin/sh\n")
    assert b"web:x:1001" in probe.entries()[passwd].data


def test_a_mount_and_a_read_only_remount_are_seen(
    watched: tuple[Path, Path, SettledProbe],
) -> None:
    # A mount changes no directory entry: the mount table's poll says it.
    top, _, probe = watched
    sub = str(top / "sub")
    assert not probe.entries()[sub].flags & MS_RDONLY
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "none", sub], check=True)
    assert probe.entries()[sub].flags & MS_RDONLY
    subprocess.run(["mount", "-o", "remount,rw", sub], check=True)
    assert not probe.entries()[sub].flags & MS_RDONLY
    probes = probe.probes
    probe.entries()
    assert probe.probes == probes  # settled again


def test_without_a_watch_every_call_probes(tmp_path: Path) -> None:
    # A watched directory that is a symlink: no watch (IN_DONT_FOLLOW), so nothing is kept.
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "x").mkdir()
    (tmp_path / "via").symlink_to("real")
    probe = SettledProbe({str(tmp_path / "via"): ("x",)}, "", hostlayout._probe)
    try:
        for _ in range(3):
            assert probe.entries()[str(tmp_path / "via" / "x")] is not None
        assert probe.probes == 3
    finally:
        probe.close()
