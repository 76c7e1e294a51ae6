"""PSI and I/O counters: parsing, and both backends against a fake cgroupfs (no root)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cgroups_fakes import RecordingBpf
from test_cgroups_fakefs import V2_CONTROL, V2_UNIT_FILES, lay_out

from supervisor import cgroups
from supervisor.cgroups import pressure, pressure_trigger
from supervisor.errors import CgroupError

MEMORY_PSI = (
    "some avg10=12.50 avg60=3.00 avg300=0.50 total=2500000\n"
    "full avg10=4.00 avg60=1.00 avg300=0.00 total=1000000\n"
)


def test_parse_psi() -> None:
    assert pressure.parse_psi(MEMORY_PSI) == {
        "some": {"avg10": 12.5, "avg60": 3.0, "avg300": 0.5, "total": 2500000},
        "full": {"avg10": 4.0, "avg60": 1.0, "avg300": 0.0, "total": 1000000},
    }
    # Kernels before 5.13 write no "full" line for cpu.
    only_some = pressure.parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=7")
    assert set(only_some) == {"some"}


@pytest.mark.parametrize(
    "text", ["", "some avg10=x avg60=0 avg300=0 total=0", "some avg10=1 total=3"]
)
def test_parse_psi_refuses_what_it_does_not_know(text: str) -> None:
    with pytest.raises(CgroupError, match=r"unexpected content in /x/memory\.pressure"):
        pressure.parse_psi(text, "/x/memory.pressure")


def test_a_missing_pressure_file_is_absent_not_zero(tmp_path: Path) -> None:
    assert pressure.read_psi(str(tmp_path / "memory.pressure")) is None
    assert pressure.read_pressure(str(tmp_path)) is None


def test_io_counters() -> None:
    v2 = "8:0 rbytes=4096 wbytes=512 rios=1 wios=1 dbytes=0 dios=0\n253:1 rbytes=10 wbytes=0\n"
    assert pressure.parse_io_stat(v2) == (4106, 512)
    assert pressure.parse_io_stat("") == (0, 0)
    v1 = "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:0 Total 4608\n7:0 Read 1\nTotal 4609\n"
    assert pressure.parse_blkio_bytes(v1) == (4097, 512)


def _v2_unit(tmp_path: Path, extra: dict[str, str]) -> cgroups.UnitCgroup:
    lay_out(tmp_path, V2_CONTROL)
    lay_out(tmp_path / "t", V2_CONTROL)
    lay_out(tmp_path / "t" / "web", {**V2_UNIT_FILES, **extra})
    manager = cgroups.new("t", root=str(tmp_path), bpf=RecordingBpf())
    unit = manager.open("web")
    assert unit is not None
    return unit


def test_v2_stats_and_sample_carry_io_and_pressure(tmp_path: Path) -> None:
    unit = _v2_unit(tmp_path, {
        "io.stat": "8:0 rbytes=100 wbytes=20 rios=1 wios=1 dbytes=0 dios=0",
        "memory.pressure": MEMORY_PSI,
        "cpu.pressure": MEMORY_PSI,
        "io.pressure": MEMORY_PSI,
    })  # fmt: skip
    stats = unit.stats()
    assert (stats.io_read_bytes, stats.io_write_bytes) == (100, 20)
    assert stats.pressure is not None and set(stats.pressure) == {"cpu", "memory", "io"}
    assert stats.pressure["memory"]["full"]["avg10"] == 4.0
    assert unit.sample() == cgroups.CgroupSample(
        memory_current=4096, cpu_usage_usec=1234, pids_current=1, io_read_bytes=100,
        io_write_bytes=20, memory_pressure=pressure.parse_psi(MEMORY_PSI),
    )  # fmt: skip


def test_v2_without_psi_or_io_controller_says_absent(tmp_path: Path) -> None:
    unit = _v2_unit(tmp_path, {})
    stats, sample = unit.stats(), unit.sample()
    assert stats.pressure is None and sample.memory_pressure is None
    assert stats.io_read_bytes is None and sample.io_write_bytes is None


@pytest.mark.parametrize("blkio", [True, False])
def test_v1_has_no_pressure_and_io_only_with_blkio(tmp_path: Path, blkio: bool) -> None:
    hierarchies = ["memory", "pids", "devices"] + (["blkio"] if blkio else [])
    for c in hierarchies:
        lay_out(tmp_path / c, {"cgroup.procs": ""})
    unit_files = {
        "memory": {"cgroup.procs": "", "memory.usage_in_bytes": "4096",
                   "memory.max_usage_in_bytes": "8192", "memory.oom_control": "oom_kill 0\n"},
        "pids": {"cgroup.procs": "", "pids.current": "2"},
        "devices": {"cgroup.procs": ""},
        "blkio": {"cgroup.procs": "",
                  "blkio.throttle.io_service_bytes_recursive": "8:0 Read 7\n8:0 Write 9\nTotal 16"},
    }  # fmt: skip
    for c in hierarchies:
        lay_out(tmp_path / c / "sandboxd" / "web", unit_files[c])
    unit = cgroups.new(root=str(tmp_path)).open("web")
    assert unit is not None
    stats, sample = unit.stats(), unit.sample()
    assert stats.pressure is None and sample.memory_pressure is None
    assert unit.pressure_average("memory", "full", "avg10") is None
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(CgroupError, match=r"needs cgroup v2 pressure \(PSI\) files"):
            unit.watch_pressure(loop, "memory", "full", 40.0, lambda: None)
    finally:
        loop.close()
    expected = (7, 9) if blkio else (None, None)
    assert (stats.io_read_bytes, stats.io_write_bytes) == expected
    assert (sample.io_read_bytes, sample.io_write_bytes) == expected
    assert (sample.memory_current, sample.pids_current) == (4096, 2)


def test_v2_pressure_average_reads_the_named_value(tmp_path: Path) -> None:
    cpu_psi = "some avg10=1 avg60=2 avg300=3 total=4\n"
    unit = _v2_unit(tmp_path, {"memory.pressure": MEMORY_PSI, "cpu.pressure": cpu_psi})
    assert unit.pressure_average("memory", "full", "avg10") == 4.0
    assert unit.pressure_average("memory", "some", "avg60") == 3.0
    assert unit.pressure_average("cpu", "full", "avg10") is None  # before Linux 5.13
    assert unit.pressure_average("io", "some", "avg10") is None  # no io.pressure here
    with pytest.raises(CgroupError, match="no pressure file for 'disk'"):
        unit.pressure_average("disk", "some", "avg10")


@pytest.mark.parametrize(
    ("kind", "threshold", "line"),
    [
        ("full", 40.0, "full 800000 2000000"),
        ("some", 12.5, "some 250000 2000000"),
        ("some", 0.0, "some 1 2000000"),  # the kernel refuses a zero stall
        ("full", 99.99, "full 1999800 2000000"),
    ],
)
def test_trigger_lines(kind: str, threshold: float, line: str) -> None:
    assert pressure_trigger.trigger_line(kind, threshold) == line


def test_trigger_windows_are_the_kernels() -> None:
    with pytest.raises(ValueError, match="500ms to 10s"):
        pressure_trigger.trigger_line("some", 10.0, window_us=20_000_000)
