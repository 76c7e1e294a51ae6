"""cpuset lists ("0-1,3"): parsing, and the check against the host's online CPUs and nodes.

The kernel answers a cpuset.cpus naming a CPU that does not exist with a bare EINVAL ("Invalid
argument"); checking first turns that into an error naming the CPUs that are missing and the
ones that exist. Shared by both backends (the file names and semantics differ, the lists not).
"""

from __future__ import annotations

import os

from supervisor.cgroups.resources import Limits
from supervisor.errors import CgroupError

ONLINE_CPUS = "/sys/devices/system/cpu/online"
ONLINE_NODES = "/sys/devices/system/node/online"


def parse_list(text: str) -> frozenset[int]:
    """ "0-1,3" -> {0, 1, 3}; "" -> {}. ValueError on anything else."""
    ids: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        low, sep, high = part.partition("-")
        first, last = int(low), int(high) if sep else int(low)
        if last < first or first < 0:
            raise ValueError(f"bad range {part!r}")
        ids.update(range(first, last + 1))
    return frozenset(ids)


def format_list(ids: frozenset[int] | set[int]) -> str:
    """{0, 1, 3} -> "0-1,3" (the kernel's own format)."""
    runs: list[list[int]] = []
    for n in sorted(ids):
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def check(name: str, requested: str, online_file: str, what: str) -> None:
    """CgroupError naming the members of `requested` that are not in `online_file`."""
    try:
        wanted = parse_list(requested)
    except ValueError:
        raise CgroupError(f'{name} {requested!r} is not a list such as "0-1,3"') from None
    if not wanted:
        raise CgroupError(f"{name} {requested!r} names no {what}")
    try:
        with open(online_file, encoding="ascii") as f:
            online = parse_list(f.read())
    except (OSError, ValueError):
        return  # no such sysfs file (e.g. a kernel without NUMA): let the kernel judge
    missing = wanted - online
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise CgroupError(
            f"{name} {requested!r}: {what}{plural} {format_list(set(missing))} "
            f"not online on this host (online: {format_list(set(online)) or 'none'})"
        )


def check_limits(limits: Limits) -> None:
    """Check `cpus` and `mems` of `limits` against this host (no-op for unset ones)."""
    if limits.cpus is not None:
        check("cpus", limits.cpus, ONLINE_CPUS, "CPU")
    if limits.mems is not None and os.path.exists(ONLINE_NODES):
        check("mems", limits.mems, ONLINE_NODES, "memory node")
