"""Limits -> cgroup files, table-driven (pure: no root, no cgroupfs)."""

from __future__ import annotations

import pytest

from supervisor.cgroups.resources import (
    Limits,
    cpu_quota_us,
    v1_plan,
    v2_plan,
    weight_to_blkio,
    weight_to_shares,
)

M = 1 << 20
V2_ALL = frozenset(
    [
        "memory.max",
        "memory.high",
        "memory.swap.max",
        "cpu.max",
        "cpu.weight",
        "pids.max",
        "io.weight",
        "cpuset.cpus",
        "cpuset.mems",
    ]
)
V1_ALL = frozenset(
    [
        "memory.limit_in_bytes",
        "memory.memsw.limit_in_bytes",
        "memory.soft_limit_in_bytes",
        "cpu.cfs_period_us",
        "cpu.cfs_quota_us",
        "cpu.shares",
        "pids.max",
        "blkio.weight",
        "cpuset.cpus",
        "cpuset.mems",
    ]
)


def v1(
    limits: Limits, present: frozenset[str] = V1_ALL, current: int | None = None
) -> dict[str, str]:
    plan = v1_plan(
        limits, present, current_memory_limit=current, parent_cpus="0-1", parent_mems="0"
    )
    assert not plan.unsupported
    return dict(plan.writes)


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (
            Limits(),
            {"memory.max": "max", "memory.high": "max", "memory.swap.max": "max",
             "cpu.max": "max 100000", "cpu.weight": "100", "pids.max": "1024",
             "io.weight": "default 100", "cpuset.cpus": "", "cpuset.mems": ""},
        ),
        (
            Limits(memory_max=256 * M, memory_high=200 * M, swap_max=0, cpu_max=0.5,
                   cpu_weight=200, pids_max=None, io_weight=50, cpus="0-1,3", mems="0"),
            {"memory.max": str(256 * M), "memory.high": str(200 * M), "memory.swap.max": "0",
             "cpu.max": "50000 100000", "cpu.weight": "200", "pids.max": "max",
             "io.weight": "default 50", "cpuset.cpus": "0-1,3", "cpuset.mems": "0"},
        ),
    ],
)  # fmt: skip
def test_v2_plan(limits: Limits, expected: dict[str, str]) -> None:
    plan = v2_plan(limits, V2_ALL)
    assert dict(plan.writes) == expected
    assert plan.unsupported == ()


def test_v2_falls_back_to_bfq_and_reports_missing_files() -> None:
    present = (V2_ALL - {"io.weight", "memory.swap.max", "cpu.max", "cpu.weight"}) | {
        "io.bfq.weight"
    }
    plan = v2_plan(Limits(io_weight=300, swap_max=0, cpu_max=1.0, cpu_weight=5), present)
    assert dict(plan.writes)["io.bfq.weight"] == "300"
    assert [u.split(":")[0] for u in plan.unsupported] == ["swap_max", "cpu_max", "cpu_weight"]
    assert "no memory.swap.max on this host" in plan.unsupported[0]


def test_unset_limit_with_missing_file_is_silently_skipped() -> None:
    plan = v2_plan(Limits(), frozenset({"memory.max", "pids.max"}))
    assert dict(plan.writes) == {"memory.max": "max", "pids.max": "1024"}
    assert plan.unsupported == ()


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (
            Limits(),
            {"memory.limit_in_bytes": "-1", "memory.memsw.limit_in_bytes": "-1",
             "memory.soft_limit_in_bytes": "-1", "cpu.cfs_period_us": "100000",
             "cpu.cfs_quota_us": "-1", "cpu.shares": "1024", "pids.max": "1024",
             "blkio.weight": "500", "cpuset.cpus": "0-1", "cpuset.mems": "0"},
        ),
        (
            Limits(memory_max=64 * M, memory_high=48 * M, swap_max=16 * M, cpu_max=1.5,
                   cpu_weight=10_000, pids_max=64, io_weight=1, cpus="1"),
            {"memory.limit_in_bytes": str(64 * M), "memory.memsw.limit_in_bytes": str(80 * M),
             "memory.soft_limit_in_bytes": str(48 * M), "cpu.cfs_period_us": "100000",
             "cpu.cfs_quota_us": "150000", "cpu.shares": "102400", "pids.max": "64",
             "blkio.weight": "10", "cpuset.cpus": "1", "cpuset.mems": "0"},
        ),
    ],
)  # fmt: skip
def test_v1_plan(limits: Limits, expected: dict[str, str]) -> None:
    assert v1(limits) == expected


MEM = ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes")


@pytest.mark.parametrize(
    ("current", "limits", "order"),
    [
        # from unlimited to a limit: memsw is still unlimited, memory goes first
        (None, Limits(memory_max=64 * M, swap_max=0), MEM),
        # raising 64M -> 128M: memsw (128M >= 64M current) first
        (64 * M, Limits(memory_max=128 * M, swap_max=0), MEM[::-1]),
        # lowering 128M -> 32M: memory first, memsw (32M < 128M) after
        (128 * M, Limits(memory_max=32 * M, swap_max=0), MEM),
        # lifting the limit: memsw to unlimited first
        (64 * M, Limits(), MEM[::-1]),
    ],
)
def test_v1_memory_and_memsw_are_ordered_for_live_updates(
    current: int | None, limits: Limits, order: tuple[str, str]
) -> None:
    writes = [f for f in v1(limits, current=current) if f in MEM]
    assert tuple(writes) == order


def test_v1_unsupported_settings_are_named() -> None:
    present = V1_ALL - {"memory.memsw.limit_in_bytes", "blkio.weight", "cpuset.cpus"}
    plan = v1_plan(
        Limits(swap_max=0, io_weight=100, cpus="0"),
        present,
        current_memory_limit=None,
        parent_cpus="0",
        parent_mems="0",
    )
    assert [u.split(":")[0] for u in plan.unsupported] == ["swap_max", "io_weight", "cpus"]
    assert "blkio.weight or blkio.bfq.weight" in plan.unsupported[1]


def test_v1_swap_needs_memory_max() -> None:
    plan = v1_plan(
        Limits(swap_max=0), V1_ALL, current_memory_limit=None, parent_cpus="", parent_mems=""
    )
    assert plan.unsupported == ("swap_max: cgroup v1 can limit swap only with memory_max set",)


def test_v1_bfq_weight_fallback() -> None:
    present = (V1_ALL - {"blkio.weight"}) | {"blkio.bfq.weight"}
    assert v1(Limits(io_weight=200), present)["blkio.bfq.weight"] == "1000"


@pytest.mark.parametrize(
    ("weight", "shares", "blkio"),
    [(1, 10, 10), (100, 1024, 500), (200, 2048, 1000), (10_000, 102_400, 1000)],
)
def test_weight_mappings(weight: int, shares: int, blkio: int) -> None:
    assert weight_to_shares(weight) == shares
    assert weight_to_blkio(weight) == blkio


def test_cpu_quota_has_a_kernel_minimum() -> None:
    assert cpu_quota_us(0.001) == 1000
    assert cpu_quota_us(2) == 200_000


@pytest.mark.parametrize(
    "kwargs",
    [{"memory_max": -1}, {"cpu_max": 0}, {"cpu_weight": 0}, {"io_weight": 10_001},
     {"pids_max": 0}],
)  # fmt: skip
def test_limits_reject_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Limits(**kwargs)  # type: ignore[arg-type]
