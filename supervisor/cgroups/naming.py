"""Checks on the names that become cgroup directory paths."""

from __future__ import annotations

from supervisor.errors import CgroupError


def check_unit_name(unit: str) -> str:
    """A unit name is one path component: it must not climb out of the parent."""
    if not unit or unit in (".", "..") or "/" in unit or "\0" in unit:
        raise CgroupError(f"invalid unit name for a cgroup: {unit!r}")
    return unit


def check_parent(parent: str) -> str:
    """`cgroup_parent` is relative to the cgroup root ("a/b"); normalised without slashes."""
    parts = [p for p in parent.strip("/").split("/") if p]
    if not parts or any(p in (".", "..") for p in parts) or "\0" in parent:
        raise CgroupError(f"invalid cgroup_parent: {parent!r} (want a path like 'a/b')")
    return "/".join(parts)


# Names of cgroups beside the units' that are no unit's: a unit name starts with a letter or a
# digit (unit/schema.py UNIT_NAME), these with a dot. A unit's next cgroup, made before its
# restart needs it, and an ended run's cgroup on its way out (engine/nextcgroup.py); a daemon
# that died holding either leaves it to the next one's start-up sweep (Reconciler.resume).
SPARE_PREFIX = ".next."
RETIRED_PREFIX = ".gone."


def spare_name(unit: str) -> str:
    return SPARE_PREFIX + unit


def retired_name(unit: str, serial: int) -> str:
    return f"{RETIRED_PREFIX}{unit}.{serial}"


def owner_of(name: str) -> str:
    """The unit a cgroup directory `name` belongs to: itself, or the unit of a spare or retired
    cgroup."""
    if name.startswith(SPARE_PREFIX):
        return name[len(SPARE_PREFIX) :]
    if name.startswith(RETIRED_PREFIX):
        return name[len(RETIRED_PREFIX) :].rpartition(".")[0]
    return name
