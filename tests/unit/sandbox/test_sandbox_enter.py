"""sandboxctl exec's view of a sandbox from a fake /proc (the entering itself needs root: see
tests/integration/test_cli_daemon.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor.linux.syscalls import NAMESPACE_FLAGS
from supervisor.sandbox.child import enter

STATUS = """\
Name:\tsh
Uid:\t100000\t100000\t100000\t100000
Gid:\t100065\t100065\t100065\t100065
CapPrm:\t00000000000004ff
CapBnd:\t00000000a80425fb
NoNewPrivs:\t1
Seccomp:\t2
"""


def test_ids_are_translated_into_the_user_namespace() -> None:
    assert enter.to_inside(100000, "         0     100000      65536\n") == 0
    assert enter.to_inside(100065, "0 100000 65536") == 65
    assert enter.to_inside(0, "0 0 4294967295") == 0
    with pytest.raises(enter.EnterError, match="not mapped"):
        enter.to_inside(5, "0 100000 65536")


def test_inspect_reads_the_running_sandbox(tmp_path: Path) -> None:
    me = tmp_path / "self"
    pid = tmp_path / "42"
    for d in (me / "ns", pid / "ns"):
        d.mkdir(parents=True)
    for name in ("mnt", "pid", "net", "uts", "ipc", "cgroup", "user"):
        (me / "ns" / name).write_text("")
        (pid / "ns" / name).write_text("")  # another inode: a namespace of its own
    os.unlink(pid / "ns" / "net")
    os.link(me / "ns" / "net", pid / "ns" / "net")  # same inode: shares our network
    (me / "cgroup").write_text("0::/\n")
    (me / "mountinfo").write_text("30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    (pid / "cgroup").write_text("0::/sandboxd/web\n")
    (pid / "status").write_text(STATUS)
    (pid / "uid_map").write_text("0 100000 65536\n")
    (pid / "gid_map").write_text("0 100000 65536\n")
    (pid / "environ").write_bytes(b"PATH=/usr/bin:/bin\0HOME=/\0NOTIFY_SOCKET=/run/x\0junk\0")
    target = enter.inspect(42, proc=str(tmp_path))
    assert target.cgroup_dirs == ("/sys/fs/cgroup/sandboxd/web",)
    assert (target.uid, target.gid) == (0, 65)
    assert (target.bounding, target.permitted) == (0xA80425FB, 0x4FF)
    assert target.no_new_privs and target.seccomp
    assert target.env == {"PATH": "/usr/bin:/bin", "HOME": "/", "NOTIFY_SOCKET": "/run/x"}
    flags = NAMESPACE_FLAGS
    assert target.clone_flags & flags["net"] == 0
    assert target.clone_flags & flags["mount"] and target.clone_flags & flags["user"]


def test_gone_process(tmp_path: Path) -> None:
    with pytest.raises(enter.EnterError, match="process 7 is gone"):
        enter.inspect(7, proc=str(tmp_path))
