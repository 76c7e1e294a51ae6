"""The daemon's own directories against an unprivileged host user (issue 18, finding 1).

A root service with `overlay = true` copies a binary into its upper layer and makes it setuid
root; the file lands in `<data_dir>/overlay/<unit>/upper/usr/bin`. Host users must not reach
it, whatever the umask the daemon was started under; directories left open by an earlier
version are tightened at start, and a directory another user owns keeps the daemon from
starting. The unprivileged host user is a real process run as uid/gid nobody.
"""

from __future__ import annotations

import contextlib
import grp
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kit import cgroup_version, uname, unit_text, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]

NOBODY = 65534
# The attack from inside: root in the sandbox writes a setuid copy of `id` (a shell would
# drop the privilege without -p; `id` shows it plainly) through the overlay on /usr.
PLANT = (
    "cp /usr/bin/id /usr/bin/sbx-rootid && chmod 4755 /usr/bin/sbx-rootid && "
    "echo planted && exec sleep 100000"
)


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """For the daemon started inside: it inherits the umask of this (single-threaded) test."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def as_nobody(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_setuid_file_in_an_overlay_is_out_of_reach_of_host_users(
    sdaemons: Callable[[], Any],
) -> None:
    daemon = sdaemons()
    os.chmod(daemon.base, 0o755)  # as /var/lib: every host user may look inside
    name = uname(daemon, "planter")
    # With host ids (the opt-out): the sandbox's root is the host's, so what it plants is a
    # setuid-root binary on the host's disk, the worst case the directory modes must contain.
    # (A default unit's root plants a file of its own unprivileged base uid.)
    sandbox = {"overlay": True, "user_namespace": "host"}
    daemon.write_unit(name, unit_text(["/bin/sh", "-c", PLANT], daemon, name, sandbox=sandbox))
    with umask(0o000):  # the worst case: every plain mkdir would be 0777
        daemon.start()
    daemon.wait_unit(name, lambda u: u["state"] == "running", 120)
    log = daemon.logs / f"{name}.log"
    wait_for(lambda: log.exists() and "planted" in log.read_text(), 60, log.read_text)
    planted = daemon.data / "overlay" / name / "upper" / "usr" / "bin" / "sbx-rootid"
    # The attack did happen: a setuid-root binary sits on the host's disk.
    st = planted.stat()
    assert st.st_uid == 0 and st.st_mode & stat.S_ISUID, oct(st.st_mode)

    with pytest.raises(PermissionError):  # exec fails in the child: the path is not searchable
        as_nobody([str(planted)])
    probe = as_nobody(["/usr/bin/stat", "-c", "%a", str(planted)])
    assert probe.returncode != 0 and "Permission denied" in probe.stderr, probe

    assert mode(daemon.data) == 0o700
    for path in (daemon.data / "overlay", daemon.data / "overlay" / name,
                 daemon.data / "overlay" / name / "work", daemon.state,
                 daemon.state / "units"):  # fmt: skip
        assert mode(path) == 0o700, path
    assert mode(daemon.logs) == 0o750 and mode(log) == 0o640
    assert daemon.stop() == 0


def test_directories_left_open_are_tightened_at_start(sdaemons: Callable[[], Any]) -> None:
    daemon = sdaemons()
    left = daemon.data / "overlay" / "old-unit" / "work"
    for path in (left, daemon.state / "units", daemon.logs):
        path.mkdir(parents=True)
    (daemon.logs / "old.log").write_text("kept\n")
    private = [daemon.state, daemon.state / "units", daemon.data, daemon.data / "overlay",
               left.parent, left]  # fmt: skip
    for path in [*private, daemon.logs]:
        os.chmod(path, 0o777)
    daemon.start()
    for path in private:
        assert mode(path) == 0o700, path
    assert mode(daemon.logs) == 0o750
    tightened = {e["dir"] for e in daemon.events("daemon.dir_tightened")}
    assert tightened == {str(p) for p in [*private, daemon.logs]}
    assert daemon.stop() == 0


@pytest.mark.parametrize("case", ["dir", "parent", "symlink"])
def test_a_directory_another_user_controls_keeps_the_daemon_from_starting(
    sdaemons: Callable[[], Any], case: str
) -> None:
    daemon = sdaemons()
    if case == "dir":
        daemon.data.mkdir()
        os.chown(daemon.data, NOBODY, NOBODY)
        expected = (f"sandboxd: data_dir {daemon.data}: owned by uid {NOBODY} (nobody), not by "
                    "root: that user could put files in it that the daemon uses; chown it to "
                    "root or choose another data_dir")  # fmt: skip
    elif case == "parent":
        (daemon.base / "nobodys").mkdir()
        os.chown(daemon.base / "nobodys", NOBODY, NOBODY)
        daemon.data = daemon.base / "nobodys" / "data"
        expected = (f"sandboxd: data_dir {daemon.data}: its parent {daemon.base}/nobodys belongs "
                    f"to uid {NOBODY} (nobody), who could swap the directory for another; use a "
                    "path whose every parent is root's")  # fmt: skip
    else:
        (daemon.base / "elsewhere").mkdir()
        daemon.data.symlink_to(daemon.base / "elsewhere")
        expected = (f"sandboxd: data_dir {daemon.data}: {daemon.data} is a symlink (to "
                    f"{daemon.base}/elsewhere), and sandboxd follows none here")  # fmt: skip
    daemon.start(wait_ready=False)
    assert daemon.proc.wait(120) == 1
    lines = daemon.stderr_path().read_text().splitlines()
    assert lines[-1] == expected, lines[-5:]
    assert not daemon.events("daemon.ready")


def _gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


@pytest.mark.skipif(_gid("users") is None, reason="needs a group named users")
def test_logs_are_readable_by_the_configured_group_only(sdaemons: Callable[[], Any]) -> None:
    daemon = sdaemons()
    os.chmod(daemon.base, 0o755)
    daemon.config.write_text('group = "users"\n')
    name = uname(daemon, "talker")
    daemon.write_unit(name, unit_text(["/bin/sh", "-c", "echo hello; exec sleep 100000"],
                                      daemon, name))  # fmt: skip
    daemon.start()
    log = daemon.logs / f"{name}.log"
    wait_for(lambda: log.exists() and log.read_text() == "hello\n", 60)
    gid = _gid("users")
    assert (daemon.logs.stat().st_gid, mode(daemon.logs)) == (gid, 0o750)
    assert (log.stat().st_gid, mode(log)) == (gid, 0o640)
    member = subprocess.run(["/bin/cat", str(log)], user=NOBODY, group=NOBODY,
                            extra_groups=[gid], capture_output=True, text=True, timeout=60,
                            check=False)  # fmt: skip
    assert member.stdout == "hello\n", member
    outsider = as_nobody(["/bin/cat", str(log)])
    assert outsider.returncode != 0 and "Permission denied" in outsider.stderr, outsider
    assert daemon.stop() == 0
