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
