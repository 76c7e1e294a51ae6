"""Limits -> cgroup files, per cgroup version. Pure: no I/O, table-tested.

A plan writes *every* file it knows, with the default for an unset limit ("max", -1, the
default weight), so that applying a new `Limits` to a running cgroup is a full live update:
a limit removed from the unit file is lifted, not left behind. A limit that the host cannot
express (the file is absent) is reported by name instead of being silently dropped; an unset
limit whose file is absent is simply skipped.

Weight mappings follow systemd (`cgroup_cpu_weight_to_shares`, `cgroup_weight_io_to_blkio`),
so the default weight 100 maps to the v1 defaults (1024 shares, blkio weight 500).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from supervisor.cgroups.devices import DeviceAccess

CPU_PERIOD_US = 100_000
# The kernel rejects a CFS quota below 1 ms.
CPU_MIN_QUOTA_US = 1_000
WEIGHT_DEFAULT = 100
SHARES_DEFAULT, SHARES_MIN, SHARES_MAX = 1024, 2, 262_144
BLKIO_DEFAULT, BLKIO_MIN, BLKIO_MAX = 500, 10, 1000


class _DeviceEntry(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def access(self) -> str: ...


@dataclass(frozen=True)
class Limits:
    """The `[resources]` of a unit, in kernel units. None means "no limit" / the default.

    `devices` is the unit's `sandbox.devices` on top of the minimal default allowlist
    (devices.py). None there means "leave the device policy as it is": a live update of
    `[resources]` keeps the running sandbox's devices, and `create()` starts a new cgroup from
    the minimal allowlist alone.
    """

    memory_max: int | None = None
    memory_high: int | None = None
    swap_max: int | None = None
    cpu_max: float | None = None
    cpu_weight: int | None = None
    pids_max: int | None = 1024
    io_weight: int | None = None
    cpus: str | None = None
    mems: str | None = None
    devices: tuple[DeviceAccess, ...] | None = None

    @classmethod
    def from_config(
        cls, resources: object, devices: Iterable[_DeviceEntry] | None = None
    ) -> Limits:
        """From a unit's `[resources]` (any object with these attribute names) and, for a
        new cgroup, its `sandbox.devices` entries (objects with `path` and `access`)."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "devices"]
        requested = (
            None if devices is None else tuple(DeviceAccess(d.path, d.access) for d in devices)
        )
        return cls(**{n: getattr(resources, n) for n in names}, devices=requested)

    def __post_init__(self) -> None:
        for name in ("memory_max", "memory_high", "swap_max"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.cpu_max is not None and self.cpu_max <= 0:
            raise ValueError(f"cpu_max must be > 0 cores, got {self.cpu_max}")
        for name in ("cpu_weight", "io_weight"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 10_000:
                raise ValueError(f"{name} must be in 1..10000, got {value}")
        if self.pids_max is not None and self.pids_max < 1:
            raise ValueError(f"pids_max must be >= 1, got {self.pids_max}")


@dataclass(frozen=True)
class Plan:
    """Ordered (file, value) writes, and the requested settings this host cannot express."""

    writes: tuple[tuple[str, str], ...] = ()
    unsupported: tuple[str, ...] = ()


@dataclass
class _Builder:
    present: Collection[str]
    writes: list[tuple[str, str]] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)

    def put(self, name: str, requested: bool, *choices: tuple[str, str]) -> None:
        """Write the first of `choices` (file, value) whose file exists."""
        for file, value in choices:
            if file in self.present:
                self.writes.append((file, value))
                return
        if requested:
            files = " or ".join(file for file, _ in choices)
            self.unsupported.append(f"{name}: no {files} on this host")

    def plan(self) -> Plan:
        return Plan(tuple(self.writes), tuple(self.unsupported))


def cpu_quota_us(cores: float) -> int:
    return max(CPU_MIN_QUOTA_US, round(cores * CPU_PERIOD_US))


def weight_to_shares(weight: int) -> int:
    return min(max(weight * SHARES_DEFAULT // WEIGHT_DEFAULT, SHARES_MIN), SHARES_MAX)


def weight_to_blkio(weight: int) -> int:
    return min(max(weight * BLKIO_DEFAULT // WEIGHT_DEFAULT, BLKIO_MIN), BLKIO_MAX)


def _or(value: int | None, default: str) -> str:
    return default if value is None else str(value)


def v2_plan(limits: Limits, present: Collection[str]) -> Plan:
    """Files of one v2 cgroup; `present` is the set of file names in the unit's directory."""
    b = _Builder(present)
    b.put(
        "memory_high",
        limits.memory_high is not None,
        ("memory.high", _or(limits.memory_high, "max")),
    )
    b.put(
        "memory_max", limits.memory_max is not None, ("memory.max", _or(limits.memory_max, "max"))
    )
    b.put("swap_max", limits.swap_max is not None, ("memory.swap.max", _or(limits.swap_max, "max")))
    quota = "max" if limits.cpu_max is None else str(cpu_quota_us(limits.cpu_max))
    b.put("cpu_max", limits.cpu_max is not None, ("cpu.max", f"{quota} {CPU_PERIOD_US}"))
    weight = str(limits.cpu_weight or WEIGHT_DEFAULT)
    b.put("cpu_weight", limits.cpu_weight is not None, ("cpu.weight", weight))
    b.put("pids_max", limits.pids_max is not None, ("pids.max", _or(limits.pids_max, "max")))
    io = limits.io_weight or WEIGHT_DEFAULT
    b.put("io_weight", limits.io_weight is not None,
          ("io.weight", f"default {io}"), ("io.bfq.weight", str(io)))  # fmt: skip
    # An empty cpuset.cpus/mems on v2 means "inherit the parent's effective set".
    b.put("cpus", limits.cpus is not None, ("cpuset.cpus", limits.cpus or ""))
    b.put("mems", limits.mems is not None, ("cpuset.mems", limits.mems or ""))
    return b.plan()


def v1_plan(
    limits: Limits,
    present: Collection[str],
    *,
    current_memory_limit: int | None,
    parent_cpus: str,
    parent_mems: str,
) -> Plan:
    """Files of a v1 unit across its hierarchies (each file's prefix names its controller).

    `current_memory_limit` (None = unlimited) orders the memory/memsw pair; `parent_cpus` and
    `parent_mems` are what an unset cpuset falls back to, since v1 has no "inherit" value.
    """
    b = _Builder(present)
    _v1_memory(b, limits, current_memory_limit)
    b.put("memory_high", limits.memory_high is not None,
          ("memory.soft_limit_in_bytes", _or(limits.memory_high, "-1")))  # fmt: skip
    # Period before quota: the kernel checks the quota against the period in place.
    if "cpu.cfs_period_us" in present:
        b.writes.append(("cpu.cfs_period_us", str(CPU_PERIOD_US)))
    quota = "-1" if limits.cpu_max is None else str(cpu_quota_us(limits.cpu_max))
    b.put("cpu_max", limits.cpu_max is not None, ("cpu.cfs_quota_us", quota))
    shares = str(weight_to_shares(limits.cpu_weight or WEIGHT_DEFAULT))
    b.put("cpu_weight", limits.cpu_weight is not None, ("cpu.shares", shares))
    b.put("pids_max", limits.pids_max is not None, ("pids.max", _or(limits.pids_max, "max")))
    blkio = str(weight_to_blkio(limits.io_weight or WEIGHT_DEFAULT))
    b.put("io_weight", limits.io_weight is not None,
          ("blkio.weight", blkio), ("blkio.bfq.weight", blkio))  # fmt: skip
    b.put("cpus", limits.cpus is not None, ("cpuset.cpus", limits.cpus or parent_cpus))
    b.put("mems", limits.mems is not None, ("cpuset.mems", limits.mems or parent_mems))
    return b.plan()


def _v1_memory(b: _Builder, limits: Limits, current_limit: int | None) -> None:
    memory = _or(limits.memory_max, "-1")
    if "memory.memsw.limit_in_bytes" not in b.present:
        b.put("memory_max", limits.memory_max is not None, ("memory.limit_in_bytes", memory))
        if limits.swap_max is not None:
            b.unsupported.append(
                "swap_max: no memory.memsw.limit_in_bytes on this host (swap accounting off)"
            )
        return
    # v1 limits memory+swap together (memsw); swap alone is only expressible on top of a memory
    # limit.
    memsw: int | None = None
    if limits.swap_max is not None:
        if limits.memory_max is None:
            b.unsupported.append("swap_max: cgroup v1 can limit swap only with memory_max set")
        else:
            memsw = limits.memory_max + limits.swap_max
    # The kernel keeps memsw >= memory at every step, so a live update must pick the order:
    # raising memsw first is valid iff the new memsw is >= the current memory limit;
    # otherwise the new memory limit is below both old values and goes first (as runc does).
    memsw_first = memsw is None or (current_limit is not None and memsw >= current_limit)
    pair = [("memory.limit_in_bytes", memory), ("memory.memsw.limit_in_bytes", _or(memsw, "-1"))]
    b.writes.extend(reversed(pair) if memsw_first else pair)
