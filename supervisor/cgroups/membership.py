"""Is a process in a unit's cgroup? Asked of a sender's pid (sd_notify), by path, not by the
version-specific cgroup.procs lists."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from supervisor.linux import proc_cgroup


class Joinable(Protocol):
    """A unit cgroup or a sub-cgroup: what a process joins it through."""

    def procs_files(self) -> list[str]: ...


def member_check(cgroup: Joinable, proc: str = "/proc") -> Callable[[int], bool]:
    """A check `pid -> bool`: is the process in the cgroup (or below it)?

    Reads /proc/<pid>/cgroup, which still answers for a process that exited but was not yet
    reaped (a shell's `systemd-notify --ready`), where cgroup.procs no longer lists it. The
    cgroup's mount points are looked up once, here.
    """
    _, mount_list = proc_cgroup.read(proc)
    dirs = [os.path.dirname(p) for p in cgroup.procs_files()]
    wanted = proc_cgroup.paths_of(dirs, mount_list)

    def check(pid: int) -> bool:
        if pid <= 0:
            return False
        try:
            with open(f"{proc}/{pid}/cgroup") as f:
                cgroups = proc_cgroup.hierarchies(f.read())
        except OSError:
            return False  # gone: cannot prove it was ours
        return proc_cgroup.contains(cgroups, wanted)

    return check
