"""The cgroup interface both backends implement; re-exported by `supervisor.cgroups`.

Kept apart from `__init__` so that the backends can import these types without importing
each other through the package.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from supervisor.cgroups.pressure import Pressure, PsiFile
from supervisor.cgroups.resources import Limits
from supervisor.errors import CgroupError

# Required by every unit: without them a service could exhaust the host's memory or pids.
REQUIRED_CONTROLLERS = ("memory", "pids")


@dataclass(frozen=True)
class CgroupStats:
    memory_current: int
    memory_peak: int | None
    cpu_usage_usec: int
    pids_current: int
    oom_kills: int
    # None where the backend cannot say: no blkio hierarchy (v1), no PSI (v1, or a kernel
    # without it). Absent is not zero: a graph of zeros would claim a measurement.
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    pressure: Pressure | None = None


@dataclass(frozen=True)
class CgroupSample:
    """What `sandboxctl top` shows of one unit per frame: the fewest files that give it
    (five on v2), so a frame of 1000 units stays cheap. Counters, not rates: the client
    divides the difference of two frames by the time between them."""

    memory_current: int
    cpu_usage_usec: int
    pids_current: int
    io_read_bytes: int | None
    io_write_bytes: int | None
    memory_pressure: PsiFile | None


@dataclass(frozen=True)
class OomEvent:
    unit: str
    oom_kills: int  # the counter's new value


class Closeable(Protocol):
    def close(self) -> None: ...


class Subgroup(Protocol):
    """A child cgroup of a unit's, in each hierarchy the unit has.

    What runs in it counts against the unit's limits (memory, pids and cpu are hierarchical),
    and the whole tree it spawns can be killed without touching the unit's own processes:
    membership is inherited and cannot be left without privileges a sandbox does not have.
    """

    def procs_files(self) -> list[str]:
        """Absolute paths of the cgroup.procs files a process joins it through."""
        ...

    def pids(self) -> list[int]: ...

    def kill_all(self) -> None:
        """SIGKILL everything in it and return once it is empty (CgroupError if it does not)."""
        ...

    def destroy(self) -> None:
        """kill_all if populated, then remove it. Idempotent."""
        ...


class UnitCgroup(Protocol):
    name: str
    # What the last apply() (including the one in Manager.create) could not express here.
    unsupported: tuple[str, ...]

    def procs_files(self) -> list[str]:
        """Absolute paths of the cgroup.procs files to write a pid into (v1: one per hierarchy).

        The launcher's forked child writes its own pid into each with raw os.open/os.write
        before it unshares, so the service is inside its limits from its first instruction.
        """
        ...

    def add_pid(self, pid: int) -> None: ...

    def apply(self, limits: Limits) -> list[str]:
        """Write all limits (safe on a running cgroup); return the unsupported settings.

        `limits.devices` None leaves the device allowlist as it is (a `[resources]` reload);
        a tuple replaces it. Bad `cpus`/`mems` or devices raise CgroupError before any write.
        """
        ...

    def stats(self) -> CgroupStats: ...

    def sample(self) -> CgroupSample: ...

    def memory_current(self) -> int:
        """One file read, for views of many units at once (`stats` reads five)."""
        ...

    def memory_reader(self) -> Callable[[], int]:
        """`memory_current` as the read of its kept file itself, for a view that keeps it
        and calls it at every request (the list view: 1000 units a request, where the
        lookups down to the file were a fifth of a row's cost). It reads live at each call
        and stays valid when the file's fd is given back (the next call opens it again)."""
        ...

    def oom_kill_count(self) -> int: ...

    def pids(self) -> list[int]: ...

    def is_populated(self) -> bool: ...

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup, forks and escapees from the process group
        included, and return once it is empty (CgroupError if it does not empty in time)."""
        ...

    def destroy(self) -> None:
        """kill_all if populated, then remove the cgroup. Idempotent."""
        ...

    def watch_oom(
        self, loop: asyncio.AbstractEventLoop, callback: Callable[[OomEvent], None]
    ) -> Closeable:
        """Call `callback` from the loop for each OOM kill in the cgroup. No threads.
        Holds `Manager.oom_watch_fds` fds until closed."""
        ...

    def subgroup(self, name: str) -> Subgroup:
        """Create (or reuse) the child cgroup `name` below this one, in every hierarchy."""
        ...

    def watch_pressure(
        self,
        loop: asyncio.AbstractEventLoop,
        resource: str,
        kind: str,
        threshold: float,
        callback: Callable[[], None],
    ) -> Closeable:
        """Call `callback` from the loop when `resource`'s `kind` stall exceeds `threshold`
        percent of a short window (a PSI trigger: pressure_trigger.py); a wake-up to confirm
        with `pressure_average`. Holds 2 fds until closed. CgroupError where the cgroup has
        no pressure files (cgroup v1, a kernel without PSI)."""
        ...

    def pressure_average(self, resource: str, kind: str, window: str) -> float | None:
        """The `kind` `window` (avg10, avg60) pressure of `resource`, percent; None if the
        kernel keeps none."""
        ...


class Manager(Protocol):
    version: int  # 1 or 2, for display only
    oom_watch_fds: int  # fds one `UnitCgroup.watch_oom` holds (for fd budgets)
    # Whether `rename` works: v1 renames a cgroup within its parent, cgroup2 cannot.
    renames: bool

    def create(self, unit: str, limits: Limits) -> UnitCgroup:
        """Create (or reuse an empty leftover) cgroup for `unit` and apply `limits`.

        The cgroup always gets a device allowlist: the minimal /dev plus `limits.devices`
        (devices.py); a device path that is not a device node raises DeviceError (a CgroupError).

        A leftover cgroup *with processes* (a crashed run) raises CgroupError: the caller
        decides between adopting it (`open`) and `open(...).kill_all()` then `create` again.
        """
        ...

    def open(self, unit: str) -> UnitCgroup | None:
        """The existing cgroup of `unit` (re-adoption after a daemon restart), or None."""
        ...

    def rename(self, cgroup: UnitCgroup, name: str) -> UnitCgroup:
        """`cgroup` under the name `name`, beside it (what it holds stays: processes, limits,
        counters). All or nothing: CgroupError, with every hierarchy as it was, if any refuses
        (`name` exists, or the backend cannot rename: `renames`)."""
        ...

    def list_units(self) -> list[str]:
        """Every cgroup directory under the units' parent: the units', and the spare and
        retired ones (naming.py)."""
        ...

    def unit_of(self, cgroup_path: str) -> str | None:
        """The unit whose cgroup is `cgroup_path` as the kernel prints it (relative to the
        hierarchy's root, e.g. the `task_memcg=` of an OOM kill record), or None if it is
        not one of this manager's units."""
        ...


Unit = TypeVar("Unit", bound=UnitCgroup)


def create_unit(cg: Unit, where: str, make: Callable[[], bool], limits: Limits) -> Unit:
    """What `Manager.create` does on either backend, given how to make the directories
    (`make` says whether it created every one of them just now).

    A leftover with processes is refused (the engine adopts it or kills it); an empty one is
    reused. A fresh cgroup allows every device (v1 inherits the parent's "a *:* rwm", v2 has no
    filter), so it always gets an allowlist, the minimal one when `limits` names none. If the
    limits cannot be applied the cgroup is removed again: no unit runs half-limited.
    """
    # Only a directory that was there before can hold processes: one mkdir(2) has just made
    # is empty. Looking for processes first read a cgroup.procs per hierarchy (eight failed
    # opens on v1) at every launch of a storm, where the cgroup is almost always new.
    if not make() and cg.is_populated():
        raise CgroupError(
            f"cgroup of unit {cg.name!r} already exists with processes {cg.pids()} "
            f"({where}), left by an earlier run; adopt it or kill_all it first"
        )
    try:
        cg.apply(limits if limits.devices is not None else dataclasses.replace(limits, devices=()))
    except CgroupError:
        cg.destroy()
        raise
    return cg


def unit_in(cgroup_path: str, base: str) -> str | None:
    """The last component of `cgroup_path` if its parent is `base` (both relative to the
    hierarchy's root). A path printed from outside our cgroup namespace has more components
    in front, so `base` is matched as a suffix of whole components."""
    head, _, unit = cgroup_path.rstrip("/").rpartition("/")
    if not unit or not ("/" + head.strip("/") + "/").endswith("/" + base.strip("/") + "/"):
        return None
    return unit
