"""member_check: a pid's /proc/<pid>/cgroup mapped through mountinfo onto the unit's
cgroup directories (the sd_notify sender check)."""

from __future__ import annotations

from pathlib import Path

from supervisor.cgroups import member_check


class Procs:
    def __init__(self, files: list[str]) -> None:
        self.files = files

    def procs_files(self) -> list[str]:
        return self.files


V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""
V1_SELF = "9:name=systemd:/\n8:pids:/\n4:memory:/\n0::/\n"


def test_membership_reads_proc(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "cgroup").write_text(V1_SELF)
    (tmp_path / "self" / "mountinfo").write_text(V1_MOUNTINFO)
    for pid, text in ((10, "8:pids:/sandboxd/web\n4:memory:/sandboxd/web/sub\n"),
                      (11, "8:pids:/sandboxd/web\n4:memory:/sandboxd/webby\n"),
                      (12, "8:pids:/\n4:memory:/\n")):  # fmt: skip
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cgroup").write_text(text)
    procs = Procs(["/sys/fs/cgroup/memory/sandboxd/web/cgroup.procs",
                   "/sys/fs/cgroup/pids/sandboxd/web/cgroup.procs"])  # fmt: skip
    check = member_check(procs, proc=str(tmp_path))
    assert check(10) and not check(11) and not check(12) and not check(13) and not check(0)
