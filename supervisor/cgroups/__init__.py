"""cgroups: one interface, a v1 and a v2 backend, chosen once by `new()`.

Nothing outside this package looks at the cgroup version (`Manager.version` is for display).
Import has no side effects: the hierarchy is only touched by `new()`.

Where unit cgroups go (`cgroup_parent` is relative to the cgroup root):
- v1: `<controller>/<cgroup_parent or "sandboxd">/<unit>` in each mounted hierarchy (v1.py).
- v2: `<cgroup_parent>/<unit>`; unset: `sandboxd/<unit>` when the daemon runs in the root
  cgroup, else `<own cgroup>/units/<unit>` with the daemon moved to `<own cgroup>/supervisor`
  (v2.py).
A leftover cgroup from a crashed run: `create` reuses it if empty, refuses it (CgroupError)
if it has processes; the engine then adopts it with `open` or clears it with `kill_all`.
"""

from __future__ import annotations

import os

from supervisor.cgroups import v1, v2
from supervisor.cgroups.base import (
    CgroupSample,
    CgroupStats,
    Closeable,
    Manager,
    OomEvent,
    Subgroup,
    UnitCgroup,
)
from supervisor.cgroups.devices import DeviceAccess, DeviceError
from supervisor.cgroups.files import on_kept as on_kept_file
from supervisor.cgroups.files import release_if_unread as release_unread_files
from supervisor.cgroups.files import stop_keeping as stop_keeping_files
from supervisor.cgroups.membership import member_check
from supervisor.cgroups.naming import SPARE_PREFIX, owner_of, retired_name, spare_name
from supervisor.cgroups.resources import Limits
from supervisor.linux.bpf import Bpf, LibcBpf

__all__ = [
    "SPARE_PREFIX",
    "CgroupSample",
    "CgroupStats",
    "Closeable",
    "DeviceAccess",
    "DeviceError",
    "Limits",
    "Manager",
    "OomEvent",
    "Subgroup",
    "UnitCgroup",
    "detect_version",
    "member_check",
    "new",
    "on_kept_file",
    "owner_of",
    "release_unread_files",
    "retired_name",
    "spare_name",
    "stop_keeping_files",
]


def detect_version(root: str = "/sys/fs/cgroup") -> int:
    """2 if `root` is a cgroup2 mount, else 1 (v1 or hybrid: controllers in v1 hierarchies).

    The root of a unified hierarchy always has `cgroup.controllers`; on a hybrid host `root`
    is a tmpfs of per-controller mounts and has none. Testing the file (not statfs) lets the
    unit tests point `root` at a fake cgroupfs in a tmp dir.
    """
    return 2 if os.path.isfile(os.path.join(root, "cgroup.controllers")) else 1


def new(
    parent: str | None = None,
    *,
    root: str = "/sys/fs/cgroup",
    proc_self_cgroup: str = "/proc/self/cgroup",
    bpf: Bpf | None = None,
) -> Manager:
    """The Manager for this host. `parent` is the config's `cgroup_parent` (relative to root).

    Creates the parent cgroup(s); on v2 with no parent and a non-root own cgroup, moves the
    processes of that cgroup (the daemon) into its `supervisor` leaf (see v2.py).
    Raises MissingControllerError naming a required controller (memory, pids; devices on v1)
    that is absent. `bpf` (v2 device filters) is the real bpf(2) unless a test passes a fake.
    """
    if detect_version(root) == 2:
        own = "/" if parent is not None else v2.own_cgroup(proc_self_cgroup)
        return v2.open_manager(root, parent, own, bpf if bpf is not None else LibcBpf())
    return v1.open_manager(root, parent)
