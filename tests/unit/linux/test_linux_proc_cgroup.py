from __future__ import annotations

from pathlib import Path

from supervisor.cgroups import member_check
from supervisor.linux import proc_cgroup as pc

V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""
V1_SELF = "9:name=systemd:/\n8:pids:/\n4:memory:/\n0::/\n"
V2_MOUNTINFO = "30 1 0:26 /sandboxd.service /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"


def v1_mounts() -> list[pc.CgroupMount]:
    return pc.mounts(V1_MOUNTINFO, list(pc.hierarchies(V1_SELF)))


def test_v1_mounts_are_matched_to_hierarchies() -> None:
    assert [(m.point, sorted(m.key)) for m in v1_mounts()] == [
        ("/sys/fs/cgroup/memory", ["memory"]),
        ("/sys/fs/cgroup/pids", ["pids"]),
        ("/sys/fs/cgroup/systemd", ["name=systemd"]),
        ("/sys/fs/cgroup/unified", []),
    ]


def test_directories_and_back_v1() -> None:
    cgroups = pc.hierarchies("8:pids:/sandboxd/web\n4:memory:/sandboxd/web\n1:name=systemd:/\n")
    dirs = pc.directories(cgroups, v1_mounts())
    assert dirs == [
        "/sys/fs/cgroup/pids/sandboxd/web",
        "/sys/fs/cgroup/memory/sandboxd/web",
        "/sys/fs/cgroup/systemd",
    ]
    wanted = pc.paths_of(dirs[:2], v1_mounts())
    assert wanted == {frozenset({"pids"}): "/sandboxd/web", frozenset({"memory"}): "/sandboxd/web"}
    assert pc.contains(cgroups, wanted)
    assert pc.contains(pc.hierarchies("8:pids:/sandboxd/web/x\n4:memory:/sandboxd/web\n"), wanted)
    assert not pc.contains(pc.hierarchies("8:pids:/sandboxd/webby\n4:memory:/sandboxd/web"), wanted)
    assert not pc.contains(pc.hierarchies("8:pids:/sandboxd/web\n"), wanted)
    assert not pc.contains(cgroups, {})


def test_v2_with_a_mount_root() -> None:
    mount_list = pc.mounts(V2_MOUNTINFO, [frozenset()])
    cgroups = pc.hierarchies("0::/sandboxd.service/web\n")
    assert pc.directories(cgroups, mount_list) == ["/sys/fs/cgroup/web"]
    assert pc.paths_of(["/sys/fs/cgroup/web"], mount_list) == {frozenset(): "/sandboxd.service/web"}
    # a cgroup outside what the mount shows has no directory here
    assert pc.directories(pc.hierarchies("0::/other/web\n"), mount_list) == []


class Procs:
    def __init__(self, files: list[str]) -> None:
        self.files = files

    def procs_files(self) -> list[str]:
        return self.files


def test_membership_reads_proc(tmp_path: Path) -> None:
    """cgroups.member_check (the sd_notify sender check) maps /proc/<pid>/cgroup through
    mountinfo onto the unit's directories: a sub-cgroup counts, a sibling with a prefix does not."""
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
