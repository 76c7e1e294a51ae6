"""Which cgroups a process is in, and where those are in this mount namespace (pure parsing).

`/proc/<pid>/cgroup` names each hierarchy by its controllers (v1, `name=...` for named ones)
or by nothing (v2) and gives paths relative to the reader's cgroup namespace root;
`/proc/self/mountinfo` says where each hierarchy is mounted and which of its directories the
mount shows. Together they turn a process into cgroup directories and back, for both versions
with no `if v2`: used by `sandboxctl exec` (join a sandbox's cgroups) and the notify endpoint
(is a sender in the unit's cgroup).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from supervisor.linux import mountinfo

Key = frozenset[str]  # a hierarchy: its controllers, or empty for cgroup2


@dataclass(frozen=True)
class CgroupMount:
    point: str  # where it is mounted, e.g. /sys/fs/cgroup/memory
    root: str  # which cgroup of the hierarchy the mount shows, e.g. "/"
    key: Key


def hierarchies(cgroup_file: str) -> dict[Key, str]:
    """The contents of /proc/<pid>/cgroup as {hierarchy: path}."""
    found: dict[Key, str] = {}
    for line in cgroup_file.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            found[frozenset(c for c in parts[1].split(",") if c)] = parts[2]
    return found


def mounts(text: str, keys: Sequence[Key]) -> list[CgroupMount]:
    """Cgroup mounts in a mountinfo `text`; a v1 mount's super options mix controllers with
    flags (`xattr`), so it is matched against the hierarchies the kernel lists (`keys`)."""
    found = []
    for m in mountinfo.parse(text):
        if m.fstype not in ("cgroup", "cgroup2"):
            continue
        key: Key | None = frozenset()
        if m.fstype == "cgroup":
            options = set(m.super_options.split(","))
            key = next((k for k in keys if k and k <= options), None)
        if key is not None:
            found.append(CgroupMount(m.point, m.root, key))
    return found


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def directories(cgroups: dict[Key, str], mount_list: Sequence[CgroupMount]) -> list[str]:
    """The directory of each of a process's cgroups, where this mount namespace shows it."""
    dirs = []
    for key, path in cgroups.items():
        for m in mount_list:
            if m.key == key and _under(path, m.root):
                rel = path[len(m.root.rstrip("/")) :].strip("/")
                dirs.append(os.path.join(m.point, rel) if rel else m.point)
                break
    return dirs


def paths_of(cgroup_dirs: Sequence[str], mount_list: Sequence[CgroupMount]) -> dict[Key, str]:
    """The reverse: cgroup directories -> {hierarchy: path as /proc/<pid>/cgroup shows it}."""
    wanted: dict[Key, str] = {}
    by_depth = sorted(mount_list, key=lambda m: len(m.point), reverse=True)
    for directory in cgroup_dirs:
        for m in by_depth:
            if _under(directory, m.point):
                rel = directory[len(m.point) :].strip("/")
                wanted[m.key] = "/" + "/".join(p for p in (m.root.strip("/"), rel) if p)
                break
    return wanted


def contains(cgroups: dict[Key, str], wanted: dict[Key, str]) -> bool:
    """Is a process with `cgroups` in (or below) every cgroup of `wanted`?"""
    return bool(wanted) and all(
        key in cgroups and _under(cgroups[key], path) for key, path in wanted.items()
    )


def read(proc: str = "/proc", pid: int | str = "self") -> tuple[dict[Key, str], list[CgroupMount]]:
    """A process's cgroups and this process's cgroup mounts."""
    with open(f"{proc}/{pid}/cgroup") as f:
        cgroups = hierarchies(f.read())
    with open(f"{proc}/self/cgroup") as f:
        keys = list(hierarchies(f.read()))
    with open(f"{proc}/self/mountinfo") as f:
        return cgroups, mounts(f.read(), keys)
