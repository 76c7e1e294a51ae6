"""cgroup v1 backend: one directory per controller hierarchy.

Layout: `<mount>/<parent>/<unit>` in each hierarchy below (those mounted on this host), with
`parent` = "sandboxd" unless configured. memory and pids are required; cpu, cpuacct, blkio,
freezer and cpuset are used when mounted (a limit needing an absent one is reported as
unsupported, and without freezer kill_all signals in a loop). A unit joins cpuset even without
`cpus`/`mems` (initialised from its parent), so a live update can pin it later without moving
its processes. devices is required too: it is the only thing standing between a process with
CAP_MKNOD and the host's raw disks and memory (devices.py), so without it the daemon refuses
to start rather than run sandboxes with every device open.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Callable

from supervisor.cgroups import cpuset, devices, files, oom, pressure, teardown
from supervisor.cgroups.base import (
    REQUIRED_CONTROLLERS,
    CgroupSample,
    CgroupStats,
    Closeable,
    OomEvent,
    UnitCgroup,
    create_unit,
    unit_in,
)
from supervisor.cgroups.freshwrites import FreshWrites
from supervisor.cgroups.naming import check_parent, check_unit_name
from supervisor.cgroups.resources import Limits, v1_plan
from supervisor.errors import CgroupError, MissingControllerError

NO_PSI = (
    "pressure_limit needs cgroup v2 pressure (PSI) files; this host's cgroups are v1, "
    "which keep none per cgroup"
)

HIERARCHIES = ("memory", "pids", "cpu", "cpuacct", "blkio", "freezer", "cpuset", "devices")
DEFAULT_PARENT = "sandboxd"


def open_manager(root: str, parent: str | None) -> V1Manager:
    mounts = {
        name: os.path.join(root, name)
        for name in HIERARCHIES
        if os.path.isfile(os.path.join(root, name, "cgroup.procs"))
    }
    for name in (*REQUIRED_CONTROLLERS, "devices"):
        if name not in mounts:
            raise MissingControllerError(name, f"{root} (no {name} hierarchy mounted)")
    rel = check_parent(parent or DEFAULT_PARENT)
    for name, mount in mounts.items():
        _ensure_path(name, mount, rel)
    if "cpuset" in mounts:
        # The kernel then gives every unit's new cpuset the parent's cpus and mems at mkdir
        # (cpuset_css_online), which _init_cpuset would otherwise write: two writes under the
        # cpuset lock per launch spared (~0.2 ms of the daemon's CPU in a storm). It still
        # writes them where the kernel did not (an exclusive sibling: the copy is skipped).
        _set_if_differs(os.path.join(mounts["cpuset"], rel, "cgroup.clone_children"), "1")
    return V1Manager({name: os.path.join(mount, rel) for name, mount in mounts.items()}, rel)


def _ensure_path(controller: str, mount: str, rel: str) -> None:
    current = mount
    for part in rel.split("/"):
        current = os.path.join(current, part)
        created = files.mkdir(current)
        if controller == "memory" and created:
            # Pre-5.16 kernels default to flat accounting; a unit's charges must count
            # against its ancestors. Only a cgroup without children may change it.
            _set_if_differs(os.path.join(current, "memory.use_hierarchy"), "1")
        if controller == "cpuset":
            _init_cpuset(current)


def _init_cpuset(path: str) -> dict[str, str]:
    """Copy cpus/mems from the parent where the kernel has not (clone_children): a v1 cpuset
    starts empty and refuses tasks until set. What each file holds now, by file name."""
    parent = os.path.dirname(path)
    held = {}
    for name in ("cpuset.cpus", "cpuset.mems"):
        value = held[name] = files.read(os.path.join(path, name))
        if not value:
            value = held[name] = files.read(os.path.join(parent, name))
            files.write(os.path.join(path, name), value)
    return held


def _set_if_differs(path: str, value: str) -> None:
    if os.path.exists(path) and files.read(path) != value:
        files.write(path, value)


@functools.lru_cache(maxsize=64)  # the bases, and a few units with probe sub-cgroups
def _hierarchy(parent: str) -> str:
    """The real directory of a controller's parent cgroup: which controllers share one
    hierarchy is fixed by the mounts, so it is resolved once per parent, not per cgroup (a
    realpath walks every component with a syscall each, per unit in a storm of launches)."""
    return os.path.realpath(parent)


class V1Manager:
    version = 1
    oom_watch_fds = 1  # an eventfd (memory.oom_control is closed once registered: oom.py)
    renames = True

    def __init__(self, bases: dict[str, str], parent: str) -> None:
        self._bases = bases  # controller -> <mount>/<parent>
        self._layout = _Layout(bases)  # shared by every unit's V1Unit
        self._parent = parent
        self.fresh_writes = FreshWrites()  # what a fresh cgroup is spared (freshwrites.py)

    def _unit(self, unit: str) -> V1Unit:
        check_unit_name(unit)
        return V1Unit(unit, self._layout, self.fresh_writes)

    def create(self, unit: str, limits: Limits) -> V1Unit:
        cg = self._unit(unit)
        return create_unit(cg, cg._dir("memory"), cg.make, limits)

    def open(self, unit: str) -> V1Unit | None:
        cg = self._unit(unit)
        return cg if cg.exists() else None

    def rename(self, cgroup: UnitCgroup, name: str) -> V1Unit:
        # One rename(2) per hierarchy (~0.1 ms for all), against a mkdir and every limit
        # written again (~1.5 ms and more): what lets a restart take a cgroup made ahead.
        old, new = self._unit(cgroup.name), self._unit(name)
        if isinstance(cgroup, V1Unit):
            cgroup.close_kept()  # its files stay valid, but belong to the old name's object
        done: list[tuple[str, str]] = []
        for src, dst in zip(old.unique_dirs(), new.unique_dirs(), strict=True):
            try:
                os.rename(src, dst)
            except OSError as err:
                for back_src, back_dst in reversed(done):
                    with contextlib.suppress(OSError):
                        os.rename(back_dst, back_src)
                reason = os.strerror(err.errno) if err.errno else str(err)
                raise CgroupError(f"failed to rename cgroup {src} to {name!r}: {reason}") from err
            done.append((src, dst))
        new.unsupported = cgroup.unsupported
        return new

    def list_units(self) -> list[str]:
        # Every hierarchy's, not memory's alone: a daemon killed in the middle of a `rename`
        # (or of a cgroup's mkdirs) leaves a name in some hierarchies only, which the start-up
        # sweep must still find, open and remove.
        found: set[str] = set()
        for base in {_hierarchy(b): b for b in self._bases.values()}.values():
            found.update(files.child_dirs(base))
        return sorted(found)

    def unit_of(self, cgroup_path: str) -> str | None:
        return unit_in(cgroup_path, self._parent)


class _Layout:
    """The hierarchies' parent directories, and the controllers that are the first of their
    hierarchy: the same for every unit of a manager, so it is held once, not per unit."""

    __slots__ = ("bases", "firsts", "fresh_files")

    def __init__(self, bases: dict[str, str]) -> None:
        self.bases = bases  # controller -> <mount>/<parent>
        # The files of a cgroup mkdir has just made, in all its hierarchies: which interface
        # files a non-root v1 cgroup has is fixed by the hierarchies' controllers (mounted
        # once), so the first fresh cgroup's listing serves every later one, where a
        # listdir(2) per hierarchy at every launch was ~10 % of making a cgroup.
        self.fresh_files: frozenset[str] | None = None
        # cpu and cpuacct are often co-mounted (symlinks to "cpu,cpuacct"): one directory,
        # one cgroup.procs.
        firsts: dict[str, str] = {}
        for controller, base in bases.items():
            firsts.setdefault(_hierarchy(base), controller)
        self.firsts = tuple(firsts.values())


class V1Unit:
    """One unit's cgroup (or a unit's sub-cgroup: `name` "unit/sub"). The daemon keeps one per
    running unit, so its directories are joined when asked for, not held: eight paths and
    their dict were ~1.2 KiB of the daemon's heap per unit."""

    __slots__ = ("_fresh", "_fresh_writes", "_kept", "_layout", "name", "unsupported")

    def __init__(self, name: str, layout: _Layout, fresh_writes: FreshWrites | None = None) -> None:
        self.name = name
        self._layout = layout
        self._fresh_writes = fresh_writes
        # Set by make(): every directory made just now, and what its cpuset holds then
        # (apply() leaves out the writes that would repeat a fresh cgroup's values).
        self._fresh: dict[str, str] | None = None
        self.unsupported: tuple[str, ...] = ()
        self._kept: dict[str, files.KeptFile] = {}  # the views' files (files.KeptFile)

    @property
    def dirs(self) -> dict[str, str]:
        """Its directory in each controller's hierarchy, by controller."""
        return {c: f"{b}/{self.name}" for c, b in self._layout.bases.items()}

    def _has(self, controller: str) -> bool:
        return controller in self._layout.bases

    def _dir(self, controller: str) -> str:
        # Not os.path.join: its checks cost more than the rest of a path's making, done ~70
        # times per cgroup made, and a checked unit name is relative and never empty.
        return f"{self._layout.bases[controller]}/{self.name}"

    @property
    def _unique(self) -> list[str]:
        return [self._dir(c) for c in self._layout.firsts]

    def _kept_file(self, name: str) -> files.KeptFile:
        kept = self._kept.get(name)
        if kept is None:
            kept = self._kept[name] = files.KeptFile(self._file(name))
        return kept

    def exists(self) -> bool:
        """In any hierarchy (one left half-renamed or half-made by a killed daemon, too)."""
        return os.path.isdir(self._dir("memory")) or any(os.path.isdir(d) for d in self._unique)

    def unique_dirs(self) -> list[str]:
        """Its directory in each hierarchy, one per hierarchy (co-mounted controllers share)."""
        return list(self._unique)

    def close_kept(self) -> None:
        for kept in self._kept.values():
            kept.close()
        self._kept.clear()

    def make(self) -> bool:
        """Make its directory in every hierarchy; whether each was made just now (none was
        there before: nothing can be in it yet, and its files are a fresh cgroup's)."""
        # One mkdir per hierarchy: co-mounted controllers (cpu,cpuacct) share a directory,
        # whose second mkdir was an EEXIST syscall at every launch.
        fresh = True
        for path in self._unique:
            fresh = files.mkdir(path) and fresh
        held = _init_cpuset(self._dir("cpuset")) if self._has("cpuset") else {}
        self._fresh = held if fresh else None
        return fresh

    def _file(self, name: str) -> str:
        return f"{self._dir(name.split('.', 1)[0])}/{name}"

    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self._unique]

    def add_pid(self, pid: int) -> None:
        for path in self.procs_files():
            files.write(path, pid)

    def apply(self, limits: Limits) -> list[str]:
        # Resolve and check everything before the first write: a bad device or CPU list
        # leaves a running cgroup as it was.
        cpuset.check_limits(limits)
        rules = None if limits.devices is None else devices.allowlist(limits.devices)
        fresh, self._fresh = self._fresh, None  # only the first apply follows the mkdir
        present = self._layout.fresh_files if fresh is not None else None
        if present is None:
            present = frozenset().union(*(files.listdir_files(d) for d in self._unique))
            if fresh is not None:
                self._layout.fresh_files = present
        own_cpuset = self._dir("cpuset") if self._has("cpuset") else "/nonexistent/x"
        cpuset_parent = os.path.dirname(own_cpuset)
        plan = v1_plan(
            limits,
            present,
            current_memory_limit=files.read_limit(self._file("memory.limit_in_bytes")),
            parent_cpus=_read_or_empty(os.path.join(cpuset_parent, "cpuset.cpus")),
            parent_mems=_read_or_empty(os.path.join(cpuset_parent, "cpuset.mems")),
        )
        if fresh is None or self._fresh_writes is None:
            for name, value in plan.writes:
                files.write(self._file(name), value)
        else:
            # What make() found in the new cpuset (the parent's, cloned or copied): not again.
            writes = [(n, v) for n, v in plan.writes if fresh.get(n) != v]
            self._fresh_writes.write(writes, self._file)
        if rules is not None:
            self._set_devices(rules)
        self.unsupported = plan.unsupported
        return list(plan.unsupported)

    def _set_devices(self, rules: tuple[devices.DeviceRule, ...]) -> None:
        # "deny a" empties the list before the allows go in: on a running cgroup an open(2)
        # in between would fail. Units only get a new list with a new cgroup (devices are in
        # [sandbox], so a change restarts), and an unchanged list is not rewritten at all.
        if devices.v1_matches(files.read(self._file("devices.list")), rules):
            return
        for name, value in devices.v1_writes(rules):
            files.write(self._file(name), value)

    def stats(self) -> CgroupStats:
        io_read, io_write = self._io()
        usage_ns = files.read_int(self._file("cpuacct.usage")) if self._has("cpuacct") else 0
        return CgroupStats(
            memory_current=self.memory_current(),
            memory_peak=files.read_int(self._file("memory.max_usage_in_bytes")),
            cpu_usage_usec=usage_ns // 1000,
            pids_current=files.read_int(self._file("pids.current")),
            oom_kills=self.oom_kill_count(),
            io_read_bytes=io_read,
            io_write_bytes=io_write,
        )

    def sample(self) -> CgroupSample:
        io_read, io_write = self._io()
        usage_ns = self._kept_file("cpuacct.usage").read_int() if self._has("cpuacct") else 0
        return CgroupSample(
            memory_current=self.memory_current(),
            cpu_usage_usec=usage_ns // 1000,
            pids_current=self._kept_file("pids.current").read_int(),
            memory_pressure=None,  # v1 keeps no PSI per cgroup
            io_read_bytes=io_read,
            io_write_bytes=io_write,
        )

    def _io(self) -> tuple[int | None, int | None]:
        # The throttle layer's counters exist whatever the I/O scheduler (the CFQ/BFQ ones
        # do not); no blkio hierarchy, nothing to say.
        try:
            text = self._kept_file("blkio.throttle.io_service_bytes_recursive").read()
        except (KeyError, CgroupError):
            return None, None
        return pressure.parse_blkio_bytes(text)

    def memory_current(self) -> int:
        return self._kept_file("memory.usage_in_bytes").read_int()

    def memory_reader(self) -> Callable[[], int]:
        return self._kept_file("memory.usage_in_bytes").read_int

    def oom_kill_count(self) -> int:
        return files.read_keyed(self._file("memory.oom_control")).get("oom_kill", 0)

    def pids(self) -> list[int]:
        # The union over hierarchies: a process moved out of one hierarchy by hand is still
        # ours if it is left in another.
        found: set[int] = set()
        for d in self._unique:
            found.update(files.read_pids(os.path.join(d, "cgroup.procs")))
        return sorted(found)

    def is_populated(self) -> bool:
        return bool(self.pids())

    def _set_freezer(self, state: str) -> None:
        if not self._has("freezer") or not os.path.isdir(self._dir("freezer")):
            # No freezer hierarchy, or its directory was empty and already removed (destroy):
            # kill rounds repeat until nothing is left.
            return
        path = self._file("freezer.state")
        files.write(path, state)
        if state == "FROZEN":
            # FREEZING until every task has stopped; a task stuck in the kernel may keep it
            # there, and the kill round is still worth doing.
            teardown.wait_until(lambda: files.read(path) == "FROZEN", teardown.FREEZE_TIMEOUT)

    def kill_all(self) -> None:
        teardown.freeze_and_kill(
            self._dir("memory"),
            self.pids,
            lambda: self._set_freezer("FROZEN"),
            lambda: self._set_freezer("THAWED"),
        )

    def destroy(self) -> None:
        self.close_kept()
        # An ended run's cgroup is almost always empty, and rmdir itself is the check (the
        # kernel refuses a cgroup with tasks: EBUSY), so the processes are looked for only
        # when one is refused: reading every hierarchy's cgroup.procs first was 8 reads on
        # each restart's loop (nextcgroup.tidy), half of what removing the cgroup cost.
        if files.rmdir_if_empty(self._unique):
            return
        self.kill_all()
        for path in self._unique:
            files.rmdir(path)

    def watch_oom(
        self, loop: asyncio.AbstractEventLoop, callback: Callable[[OomEvent], None]
    ) -> Closeable:
        return oom.watch_oom_control(loop, self.name, self._dir("memory"), callback)

    def watch_pressure(
        self,
        loop: asyncio.AbstractEventLoop,
        resource: str,
        kind: str,
        threshold: float,
        callback: Callable[[], None],
    ) -> Closeable:
        raise CgroupError(NO_PSI)

    def pressure_average(self, resource: str, kind: str, window: str) -> float | None:
        return None

    def subgroup(self, name: str) -> V1Unit:
        # The same directory below ours in each hierarchy; a V1Unit is exactly that shape
        # (make() gives its cpuset the parent's cpus and mems, without which it refuses tasks).
        sub = V1Unit(f"{self.name}/{name}", self._layout)
        sub.make()
        return sub


def _read_or_empty(path: str) -> str:
    return files.read(path) if os.path.exists(path) else ""


def self_join_file(procs_file: str) -> str:
    """The file a single-threaded process writes "0" to, to move itself into the cgroup whose
    `cgroup.procs` is `procs_file`: v1's `tasks` beside it, else `procs_file` itself (v2).

    Why: writing cgroup.procs moves a whole thread group under the kernel's global threadgroup
    lock, whose write side waits for an RCU grace period (several milliseconds, more under
    load) unless another write came just before; writing 0 to `tasks` moves only the calling
    thread, which takes no such lock. For a process with one thread (a launcher: forked, so
    single-threaded) both move the same thing."""
    where, _, name = procs_file.rpartition("/")
    if name != "cgroup.procs" or not _has_tasks(os.path.dirname(where)):
        return procs_file
    return f"{where}/tasks"


@functools.lru_cache(maxsize=64)  # the bases, and a few units with probe sub-cgroups
def _has_tasks(parent: str) -> bool:
    """Whether the cgroups below `parent` have a `tasks` file: every v1 cgroup has one, the
    root too, and no v2 cgroup does, so it is a fact of the hierarchy, asked of the parent
    once, where a stat of each new cgroup's own `tasks` per hierarchy was 8 per launch."""
    return os.path.exists(os.path.join(parent, "tasks"))
