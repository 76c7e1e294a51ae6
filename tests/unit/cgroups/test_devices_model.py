"""The device allowlist model (pure, no root): rules, the default list, resolving a unit's
devices by stat(), v1 lines; and both backends writing it against a fake cgroupfs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cgroups_fakes import RecordingBpf

from supervisor import cgroups
from supervisor.cgroups import devices
from supervisor.cgroups.devices import DeviceAccess, DeviceError, DeviceRule
from supervisor.cgroups.devices_bpf import assemble
from supervisor.errors import CgroupError, MissingControllerError


def test_default_list_is_the_minimal_dev_read_write_without_mknod() -> None:
    assert [r.v1_line() for r in devices.DEFAULT_RULES] == [
        "c 1:3 rw", "c 1:5 rw", "c 1:7 rw", "c 1:8 rw", "c 1:9 rw", "c 5:0 rw", "c 5:2 rw",
        "c 136:* rw",
    ]  # fmt: skip
    assert not any("m" in r.access for r in devices.DEFAULT_RULES)


@pytest.mark.parametrize("access", ["", "x", "rr", "rwmx", "R"])
def test_bad_access_strings_are_refused(access: str) -> None:
    with pytest.raises(DeviceError, match="combination of r, w and m"):
        DeviceAccess("/dev/null", access)
    with pytest.raises(DeviceError):
        DeviceRule("c", 1, 3, access)


def test_relative_path_and_out_of_range_numbers_are_refused() -> None:
    with pytest.raises(DeviceError, match="not absolute"):
        DeviceAccess("dev/null")
    with pytest.raises(DeviceError, match="out of range"):
        DeviceRule("c", 1 << 32, 0, "r")


def test_unit_device_is_resolved_by_stat_of_the_host_node() -> None:
    rule = devices.rule_for(DeviceAccess("/dev/null", "r"))
    st = os.stat("/dev/null")
    assert rule == DeviceRule("c", os.major(st.st_rdev), os.minor(st.st_rdev), "r")


def test_missing_path_and_non_device_file_are_clear_errors(tmp_path: Path) -> None:
    plain = tmp_path / "notadevice"
    plain.write_text("")
    with pytest.raises(DeviceError, match=r"notadevice is not a device node on this host"):
        devices.rule_for(DeviceAccess(str(plain)))
    with pytest.raises(DeviceError, match="is not a device node"):
        devices.rule_for(DeviceAccess(str(tmp_path)))
    with pytest.raises(DeviceError, match="/dev/no-such-node does not exist on this host"):
        devices.rule_for(DeviceAccess("/dev/no-such-node"))
    assert devices.node_problem("/dev/null") is None


def test_allowlist_appends_unit_devices_and_merges_access_per_node() -> None:
    rules = devices.allowlist([DeviceAccess("/dev/null", "m"), DeviceAccess("/dev/zero", "r")])
    assert rules[0].v1_line() == "c 1:3 rwm"  # merged, as devices.list shows it
    assert rules[1].v1_line() == "c 1:5 rw"
    assert len(rules) == len(devices.DEFAULT_RULES)


def test_v1_writes_deny_everything_first_then_one_rule_per_write() -> None:
    writes = devices.v1_writes(devices.DEFAULT_RULES[:2])
    assert writes == [
        ("devices.deny", "a"), ("devices.allow", "c 1:3 rw"), ("devices.allow", "c 1:5 rw")
    ]  # fmt: skip
    assert devices.v1_matches("c 1:3 rw\nc 1:5 rw\n", devices.DEFAULT_RULES[:2])
    assert not devices.v1_matches("a *:* rwm\n", devices.DEFAULT_RULES[:2])


def test_limits_from_config_carries_devices_only_when_given() -> None:
    class Res:
        memory_max, memory_high, swap_max, cpu_max = None, None, None, None
        cpu_weight, pids_max, io_weight, cpus, mems = 100, 1024, 100, "0", None

    class Dev:
        path, access = "/dev/net/tun", "rw"

    assert cgroups.Limits.from_config(Res()).devices is None
    limits = cgroups.Limits.from_config(Res(), [Dev()])
    assert limits.devices == (DeviceAccess("/dev/net/tun", "rw"),)
    assert limits.cpus == "0"


# --- backends against a fake cgroupfs -------------------------------------------------------

V2_CONTROL = {"cgroup.controllers": "memory pids", "cgroup.subtree_control": "", "cgroup.procs": ""}
V2_UNIT = {"cgroup.procs": "", "memory.max": "max", "pids.max": "max"}


def _lay_out(path: Path, contents: dict[str, str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():
        (path / name).write_text(text)


def test_v2_filter_attached_on_create_kept_on_resource_update_replaced_and_detached(
    tmp_path: Path,
) -> None:
    _lay_out(tmp_path, V2_CONTROL)
    _lay_out(tmp_path / "t", V2_CONTROL)
    _lay_out(tmp_path / "t" / "web", V2_UNIT)
    bpf = RecordingBpf()
    manager = cgroups.new("t", root=str(tmp_path), bpf=bpf)
    unit_dir = str(tmp_path / "t" / "web")

    unit = manager.create("web", cgroups.Limits())
    assert bpf.program_of(unit_dir) == assemble(devices.DEFAULT_RULES)
    assert bpf.calls[0][2:] == ("GPL", "sandboxd_dev")
    first = list(bpf.attached[unit_dir])

    unit.apply(cgroups.Limits(pids_max=10))  # a [resources] live update: devices=None
    assert bpf.attached[unit_dir] == first

    with_null = cgroups.Limits(devices=(DeviceAccess("/dev/null", "rwm"),))
    unit.apply(with_null)
    assert bpf.attached[unit_dir] != first, "replaced"
    assert bpf.program_of(unit_dir) == assemble(devices.allowlist(with_null.devices or ()))
    assert bpf.calls[-1][0] == "attach" and bpf.calls[-1][3] == str(2 | 4)  # MULTI | REPLACE

    # The filter is detached before the rmdir (which a fake directory with files refuses).
    with pytest.raises(CgroupError, match="failed to remove cgroup"):
        unit.destroy()
    assert bpf.attached[unit_dir] == []


def test_bad_device_fails_before_any_write(tmp_path: Path) -> None:
    _lay_out(tmp_path, V2_CONTROL)
    _lay_out(tmp_path / "t", V2_CONTROL)
    _lay_out(tmp_path / "t" / "web", V2_UNIT)
    bpf = RecordingBpf()
    manager = cgroups.new("t", root=str(tmp_path), bpf=bpf)
    unit = manager.create("web", cgroups.Limits())
    plain = tmp_path / "file"
    plain.write_text("")
    with pytest.raises(DeviceError, match="not a device node"):
        unit.apply(cgroups.Limits(pids_max=7, devices=(DeviceAccess(str(plain)),)))
    assert (tmp_path / "t" / "web" / "pids.max").read_text() == "1024"
    assert len(bpf.attached[str(tmp_path / "t" / "web")]) == 1


def test_v1_without_devices_hierarchy_refuses_to_start(tmp_path: Path) -> None:
    for c in ("memory", "pids"):
        _lay_out(tmp_path / c, {"cgroup.procs": ""})
    with pytest.raises(MissingControllerError, match="'devices'"):
        cgroups.new(root=str(tmp_path))
