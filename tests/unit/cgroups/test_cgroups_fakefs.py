"""File helpers and both backends against a tmp dir standing in for cgroupfs (no root).

A fake cgroupfs cannot create kernel files on mkdir, so each test lays out the directories
the backend will find (an "empty leftover" cgroup, which `create` must reuse).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cgroups_fakes import RecordingBpf

from supervisor import cgroups
from supervisor.cgroups import files
from supervisor.cgroups.base import unit_in
from supervisor.cgroups.v1 import V1Unit, self_join_file
from supervisor.errors import CgroupError, CgroupWriteError, MissingControllerError

V2_UNIT_FILES = {
    "cgroup.procs": "",
    "cgroup.events": "populated 0\nfrozen 0\n",
    "memory.max": "max",
    "memory.high": "max",
    "memory.swap.max": "max",
    "memory.current": "4096",
    "memory.peak": "8192",
    "memory.events": "low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\n",
    "cpu.max": "max 100000",
    "cpu.weight": "100",
    "cpu.stat": "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n",
    "pids.max": "max",
    "pids.current": "1",
}
V2_CONTROL = {
    "cgroup.controllers": "cpuset cpu io memory pids",
    "cgroup.subtree_control": "",
    "cgroup.procs": "",
}


def lay_out(path: Path, contents: dict[str, str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():
        (path / name).write_text(text)


def test_write_names_path_and_value(tmp_path: Path) -> None:
    target = tmp_path / "memory.max"
    with pytest.raises(CgroupWriteError) as info:
        files.write(str(target), 268435456)
    assert str(info.value) == f"failed to write '268435456' to {target}: No such file or directory"
    assert info.value.path == str(target)


def test_write_replaces_a_fake_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "pids.max"
    target.write_text("1024")
    files.write(str(target), "max")
    assert target.read_text() == "max"


def test_readers(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("max\n")
    (tmp_path / "b").write_text("9223372036854771712\n")
    (tmp_path / "c").write_text("oom 2\noom_kill 1\nbogus\n")
    (tmp_path / "d").write_text("12\n34\n")
    (tmp_path / "e").write_text("twelve")
    assert files.read_limit(str(tmp_path / "a")) is None
    assert files.read_limit(str(tmp_path / "b")) is None
    assert files.read_keyed(str(tmp_path / "c")) == {"oom": 2, "oom_kill": 1}
    assert files.read_pids(str(tmp_path / "d")) == [12, 34]
    assert files.read_pids(str(tmp_path / "gone")) == []
    with pytest.raises(CgroupError, match="unexpected content"):
        files.read_int(str(tmp_path / "e"))


def test_rmdir_is_idempotent(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    files.rmdir(str(tmp_path / "x"))
    files.rmdir(str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_detects_version(tmp_path: Path) -> None:
    assert cgroups.detect_version(str(tmp_path)) == 1
    (tmp_path / "cgroup.controllers").write_text("memory pids")
    assert cgroups.detect_version(str(tmp_path)) == 2


def test_v2_missing_required_controller_is_one_clear_error(tmp_path: Path) -> None:
    lay_out(tmp_path, {**V2_CONTROL, "cgroup.controllers": "cpu io memory"})
    with pytest.raises(MissingControllerError) as info:
        cgroups.new("test/sandboxd", root=str(tmp_path), bpf=RecordingBpf())
    assert info.value.controller == "pids"
    assert str(tmp_path / "cgroup.controllers") in str(info.value)


def test_v1_missing_required_controller_is_one_clear_error(tmp_path: Path) -> None:
    lay_out(tmp_path / "memory", {"cgroup.procs": ""})
    lay_out(tmp_path / "cpu", {"cgroup.procs": ""})
    with pytest.raises(MissingControllerError, match="'pids'"):
        cgroups.new(root=str(tmp_path))


def test_v2_explicit_parent_enables_controllers_and_reuses_empty_leftover(
    tmp_path: Path,
) -> None:
    lay_out(tmp_path, {**V2_CONTROL, "cgroup.controllers": "cpu memory pids"})
    lay_out(tmp_path / "t", V2_CONTROL)
    lay_out(tmp_path / "t" / "web", V2_UNIT_FILES)  # an empty leftover of a crashed run
    manager = cgroups.new("t", root=str(tmp_path), bpf=RecordingBpf())
    # Only the last "+controller" write survives in a fake file; the real kernel keeps all.
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+pids"
    assert manager.list_units() == ["web"]

    unit = manager.create("web", cgroups.Limits(memory_max=1 << 20, cpu_max=0.25, io_weight=5))
    d = tmp_path / "t" / "web"
    assert (d / "memory.max").read_text() == str(1 << 20)
    assert (d / "cpu.max").read_text() == "25000 100000"
    assert (d / "pids.max").read_text() == "1024"
    assert unit.unsupported == ("io_weight: no io.weight or io.bfq.weight on this host",)
    assert unit.procs_files() == [str(d / "cgroup.procs")]
    assert unit.stats() == cgroups.CgroupStats(
        memory_current=4096, memory_peak=8192, cpu_usage_usec=1234, pids_current=1, oom_kills=1
    )
    unit.add_pid(4242)
    assert (d / "cgroup.procs").read_text() == "4242"


def test_v2_populated_leftover_is_refused(tmp_path: Path) -> None:
    lay_out(tmp_path, V2_CONTROL)
    lay_out(tmp_path / "t", V2_CONTROL)
    lay_out(tmp_path / "t" / "web", {**V2_UNIT_FILES, "cgroup.procs": "77\n"})
    manager = cgroups.new("t", root=str(tmp_path), bpf=RecordingBpf())
    with pytest.raises(CgroupError, match=r"already exists with processes \[77\]"):
        manager.create("web", cgroups.Limits())
    opened = manager.open("web")
    assert opened is not None and opened.pids() == [77]
    assert manager.open("db") is None


def test_v2_own_cgroup_moves_daemon_to_a_leaf(tmp_path: Path) -> None:
    own = tmp_path / "system.slice" / "sandboxd.service"
    lay_out(tmp_path, V2_CONTROL)
    lay_out(own, {**V2_CONTROL, "cgroup.procs": "1234\n"})
    lay_out(own / "supervisor", {"cgroup.procs": ""})
    lay_out(own / "units", V2_CONTROL)
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text("0::/system.slice/sandboxd.service\n")
    manager = cgroups.new(root=str(tmp_path), proc_self_cgroup=str(self_cgroup), bpf=RecordingBpf())
    assert (own / "supervisor" / "cgroup.procs").read_text() == "1234"
    assert (own / "cgroup.subtree_control").read_text() == "+pids"
    lay_out(own / "units" / "web", V2_UNIT_FILES)
    assert manager.list_units() == ["web"]
    # OOM records name cgroups relative to the hierarchy's root: only our units are ours.
    assert manager.unit_of("/system.slice/sandboxd.service/units/web") == "web"
    assert manager.unit_of("/system.slice/sandboxd.service/web") is None
    assert manager.unit_of("/system.slice/other.service/units/web") is None
    assert manager.oom_watch_fds == 1


def test_v2_subgroup_is_a_child_of_the_unit(tmp_path: Path) -> None:
    lay_out(tmp_path, V2_CONTROL)
    lay_out(tmp_path / "t", V2_CONTROL)
    lay_out(tmp_path / "t" / "web", V2_UNIT_FILES)
    manager = cgroups.new("t", root=str(tmp_path), bpf=RecordingBpf())
    unit = manager.open("web")
    assert unit is not None
    sub = unit.subgroup("probe")
    d = tmp_path / "t" / "web" / "probe"
    assert d.is_dir() and sub.procs_files() == [str(d / "cgroup.procs")]
    (d / "cgroup.procs").write_text("5\n6\n")
    assert sub.pids() == [5, 6] and unit.pids() == []
    (d / "cgroup.procs").unlink()  # a real rmdir ignores kernel files; a fake one does not
    sub.destroy()
    assert not d.exists()
    sub.destroy()  # idempotent


def test_unit_names_cannot_escape_the_parent(tmp_path: Path) -> None:
    lay_out(tmp_path, V2_CONTROL)
    lay_out(tmp_path / "t", V2_CONTROL)
    manager = cgroups.new("t", root=str(tmp_path), bpf=RecordingBpf())
    for bad in ("", "..", "a/b"):
        with pytest.raises(CgroupError, match="invalid unit name"):
            manager.open(bad)
    with pytest.raises(CgroupError, match="invalid cgroup_parent"):
        cgroups.new("../etc", root=str(tmp_path), bpf=RecordingBpf())


def test_v1_layout_and_apply(tmp_path: Path) -> None:
    for c in ("memory", "pids", "cpu", "cpuset", "devices"):
        lay_out(tmp_path / c, {"cgroup.procs": ""})
    lay_out(tmp_path / "cpuset", {"cgroup.procs": "", "cpuset.cpus": "0-3", "cpuset.mems": "0"})
    lay_out(tmp_path / "cpuset" / "sandboxd", {"cpuset.cpus": "", "cpuset.mems": ""})
    unit_files = {
        "memory": {"cgroup.procs": "", "memory.limit_in_bytes": "9223372036854771712",
                   "memory.soft_limit_in_bytes": "9223372036854771712",
                   "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"},
        "pids": {"cgroup.procs": "", "pids.max": "max"},
        "cpu": {"cgroup.procs": "", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1",
                "cpu.shares": "1024"},
        "cpuset": {"cgroup.procs": "", "cpuset.cpus": "", "cpuset.mems": ""},
        "devices": {"cgroup.procs": "", "devices.list": "a *:* rwm", "devices.deny": "",
                    "devices.allow": ""},
    }  # fmt: skip
    for c, contents in unit_files.items():
        lay_out(tmp_path / c / "sandboxd" / "web", contents)
    manager = cgroups.new(root=str(tmp_path))
    assert manager.version == 1
    # the parent cpuset is initialised from the root before any task can join below it
    assert (tmp_path / "cpuset" / "sandboxd" / "cpuset.cpus").read_text() == "0-3"
    unit = manager.create("web", cgroups.Limits(memory_max=1 << 24, swap_max=0, cpu_max=0.5))
    assert unit.unsupported == (
        "swap_max: no memory.memsw.limit_in_bytes on this host (swap accounting off)",
    )
    assert (tmp_path / "memory/sandboxd/web/memory.limit_in_bytes").read_text() == str(1 << 24)
    assert (tmp_path / "cpu/sandboxd/web/cpu.cfs_quota_us").read_text() == "50000"
    assert (tmp_path / "cpuset/sandboxd/web/cpuset.cpus").read_text() == "0-3"
    assert unit.oom_kill_count() == 3
    # A fake file keeps only the last write: the allowlist's last rule (pty slaves).
    assert (tmp_path / "devices/sandboxd/web/devices.deny").read_text() == "a"
    assert (tmp_path / "devices/sandboxd/web/devices.allow").read_text() == "c 136:* rw"
    assert len(unit.procs_files()) == 5
    assert manager.list_units() == ["web"]
    assert manager.unit_of("/sandboxd/web") == "web"
    assert manager.unit_of("/xsandboxd/web") is None
    assert manager.oom_watch_fds == 1

    # A sub-cgroup in every hierarchy; its cpuset starts with the unit's cpus and mems (a v1
    # cpuset refuses tasks until they are set). A fake mkdir makes no kernel files: lay out.
    for c in unit_files:
        lay_out(tmp_path / c / "sandboxd" / "web" / "probe", {"cgroup.procs": ""})
    lay_out(tmp_path / "cpuset/sandboxd/web/probe", {"cpuset.cpus": "", "cpuset.mems": ""})
    sub = unit.subgroup("probe")
    assert (tmp_path / "cpuset/sandboxd/web/probe/cpuset.cpus").read_text() == "0-3"
    assert sorted(sub.procs_files()) == sorted(
        str(tmp_path / c / "sandboxd/web/probe/cgroup.procs") for c in unit_files
    )
    (tmp_path / "pids/sandboxd/web/probe/cgroup.procs").write_text("7\n")
    assert sub.pids() == [7]


def test_v2_own_cgroup_already_the_leaf(tmp_path: Path) -> None:
    own = tmp_path / "sandboxd.service"
    lay_out(tmp_path, V2_CONTROL)
    lay_out(own, V2_CONTROL)
    lay_out(own / "supervisor", {"cgroup.procs": "99\n"})
    lay_out(own / "units", V2_CONTROL)
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text("0::/sandboxd.service/supervisor\n")
    manager = cgroups.new(root=str(tmp_path), proc_self_cgroup=str(self_cgroup), bpf=RecordingBpf())
    assert not (own / "supervisor" / "supervisor").exists()
    lay_out(own / "units" / "db", V2_UNIT_FILES)
    assert manager.list_units() == ["db"]


@pytest.mark.parametrize(
    ("path", "base", "unit"),
    [
        ("/sandboxd-test-1-2/hog", "sandboxd-test-1-2", "hog"),
        ("/sandboxd-test-1-2/hog", "sandboxd-test-1-3", None),  # another daemon's unit
        ("/a/b/hog", "a/b", "hog"),
        ("/a/b/hog", "b", "hog"),  # printed from outside our cgroup namespace
        ("/xb/hog", "b", None),
        ("/a/b/c/hog", "a/b", None),  # deeper: a sub-cgroup, not a unit
        ("/", "sandboxd", None),
        ("/sandboxd", "sandboxd", None),
    ],
)
def test_unit_in(path: str, base: str, unit: str | None) -> None:
    assert unit_in(path, base) == unit


def test_a_launcher_joins_v1_through_tasks_and_v2_through_cgroup_procs(tmp_path: Path) -> None:
    # As the kernel has them: every v1 cgroup (its parent too) with `tasks`, no v2 cgroup.
    v1, v2 = tmp_path / "memory" / "unit", tmp_path / "unified" / "unit"
    for d, names in ((v1, ("cgroup.procs", "tasks")), (v2, ("cgroup.procs",))):
        d.mkdir(parents=True)
        for where in (d, d.parent):
            for name in names:
                (where / name).write_text("")
    assert self_join_file(str(v1 / "cgroup.procs")) == str(v1 / "tasks")
    assert self_join_file(str(v2 / "cgroup.procs")) == str(v2 / "cgroup.procs")
    # A fact of the hierarchy, asked of the parent once: a later unit's own files are not
    # looked at (its `tasks` file is named though this fake cgroup has none).
    other = tmp_path / "memory" / "other"
    assert self_join_file(str(other / "cgroup.procs")) == str(other / "tasks")


def test_v1_units_share_their_manager_layout_and_join_co_mounted_hierarchies_once(
    tmp_path: Path,
) -> None:
    # cpu and cpuacct co-mounted, as most hosts have them: one directory, one cgroup.procs.
    for c in ("memory", "pids", "cpu,cpuacct", "devices"):
        lay_out(tmp_path / c, {"cgroup.procs": ""})
    for c in ("cpu", "cpuacct"):
        (tmp_path / c).symlink_to("cpu,cpuacct")
    for c in ("memory", "pids", "cpu,cpuacct", "devices"):
        for unit in ("a", "b"):
            lay_out(tmp_path / c / "sandboxd" / unit, {"cgroup.procs": ""})
    manager = cgroups.new(root=str(tmp_path))
    a, b = manager.open("a"), manager.open("b")
    assert isinstance(a, V1Unit) and isinstance(b, V1Unit)
    # The daemon keeps one per running unit: no paths of its own, one layout for all.
    assert not hasattr(a, "__dict__") and a._layout is b._layout
    assert a.dirs == {c: str(tmp_path / c / "sandboxd/a") for c in a.dirs}
    assert sorted(a.dirs) == ["cpu", "cpuacct", "devices", "memory", "pids"]
    assert a.procs_files() == [
        str(tmp_path / c / "sandboxd/a/cgroup.procs") for c in ("memory", "pids", "cpu", "devices")
    ]
    assert [p.replace("/b/", "/a/") for p in b.procs_files()] == a.procs_files()
