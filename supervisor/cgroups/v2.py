"""cgroup v2 backend: one unified hierarchy.

Layout, by where the units go (the "base"; every child of the base is a unit cgroup):
- `cgroup_parent` set: `<root>/<cgroup_parent>/<unit>` (created; controllers enabled on
  the way down). Tests use this to run side by side.
- unset, daemon in the root cgroup (VM plain mode, a bare host): `<root>/sandboxd/<unit>`.
- unset, daemon in its own cgroup (systemd `Delegate=yes`): that cgroup must not hold
  processes once its children get controllers (the "no internal processes" rule), so every
  process in it moves to the leaf `<own>/supervisor`, and units go to `<own>/units/<unit>`.
memory and pids are required; cpu, io and cpuset are enabled when the parent offers them.
Device access is not a controller on v2: each unit cgroup gets a BPF device filter
(devices_bpf.py), detached again before the cgroup is removed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from supervisor.cgroups import (
    cpuset,
    devices,
    devices_bpf,
    files,
    oom,
    pressure,
    pressure_trigger,
    teardown,
)
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
from supervisor.cgroups.naming import check_parent, check_unit_name
from supervisor.cgroups.resources import Limits, v2_plan
from supervisor.errors import CgroupError, CgroupWriteError, MissingControllerError
from supervisor.linux.bpf import Bpf

WANTED_CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids")
ROOT_BASE = "sandboxd"
DAEMON_LEAF = "supervisor"
UNITS_DIR = "units"


def own_cgroup(proc_self_cgroup: str = "/proc/self/cgroup") -> str:
    """This process's v2 cgroup path ("/" for the root), from the "0::" line."""
    for line in files.read(proc_self_cgroup).splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    raise CgroupError(f"no cgroup v2 entry in {proc_self_cgroup}")


def open_manager(root: str, parent: str | None, own: str, bpf: Bpf) -> V2Manager:
    if parent is not None:
        return V2Manager(root, _make_path(root, check_parent(parent)), bpf)
    if own.strip("/") == "":
        return V2Manager(root, _make_path(root, ROOT_BASE), bpf)
    own_rel = check_parent(own)
    if os.path.basename(own_rel) == DAEMON_LEAF:
        # Already moved by an earlier Manager in this process (or a re-exec): the delegated
        # cgroup is the leaf's parent.
        own_rel = os.path.dirname(own_rel) or own_rel
    own_dir = os.path.join(root, own_rel)
    leaf = os.path.join(own_dir, DAEMON_LEAF)
    files.mkdir(leaf)
    for pid in files.read_pids(os.path.join(own_dir, "cgroup.procs")):
        _move(pid, os.path.join(leaf, "cgroup.procs"))
    _enable_controllers(own_dir)
    base = os.path.join(own_dir, UNITS_DIR)
    files.mkdir(base)
    _enable_controllers(base)
    return V2Manager(root, base, bpf)


def _move(pid: int, procs: str) -> None:
    try:
        files.write(procs, pid)
    except CgroupWriteError as err:
        if err.errno != 3:  # ESRCH: exited meanwhile, nothing to move
            raise


def _make_path(root: str, rel: str) -> str:
    """mkdir -p `rel` under `root`, enabling the controllers in each ancestor on the way."""
    current = root
    for part in rel.split("/"):
        _enable_controllers(current)
        current = os.path.join(current, part)
        files.mkdir(current)
    _enable_controllers(current)
    return current


def _enable_controllers(path: str) -> None:
    """Enable WANTED_CONTROLLERS in `path`'s children; MissingControllerError for a required one.

    Already-enabled ones are not rewritten: inside a delegated subtree the ancestors above the
    delegation point are not ours to write, even with the same value.
    """
    available = files.read(os.path.join(path, "cgroup.controllers")).split()
    for name in REQUIRED_CONTROLLERS:
        if name not in available:
            raise MissingControllerError(name, os.path.join(path, "cgroup.controllers"))
    control = os.path.join(path, "cgroup.subtree_control")
    enabled = files.read(control).split()
    for name in WANTED_CONTROLLERS:
        if name in available and name not in enabled:
            files.write(control, f"+{name}")


class V2Manager:
    version = 2
    oom_watch_fds = 1  # one inotify fd on memory.events
    # cgroup2 has no rename (only v1's hierarchies do): a restart makes its cgroup afresh.
    renames = False

    def __init__(self, root: str, base: str, bpf: Bpf) -> None:
        self.base = base
        self._base_rel = os.path.relpath(base, root)
        self._bpf = bpf

    def _unit(self, unit: str) -> V2Unit:
        return V2Unit(check_unit_name(unit), os.path.join(self.base, unit), self._bpf)

    def create(self, unit: str, limits: Limits) -> V2Unit:
        cg = self._unit(unit)
        return create_unit(cg, cg.path, lambda: files.mkdir(cg.path), limits)

    def open(self, unit: str) -> V2Unit | None:
        cg = self._unit(unit)
        return cg if os.path.isdir(cg.path) else None

    def rename(self, cgroup: UnitCgroup, name: str) -> V2Unit:
        raise CgroupError(f"cannot rename cgroup {cgroup.name!r} to {name!r}: cgroup2 cannot")

    def list_units(self) -> list[str]:
        return files.child_dirs(self.base)

    def unit_of(self, cgroup_path: str) -> str | None:
        return unit_in(cgroup_path, self._base_rel)


class V2Unit:
    def __init__(self, name: str, path: str, bpf: Bpf) -> None:
        self.name = name
        self.path = path
        self._bpf = bpf
        self.unsupported: tuple[str, ...] = ()
        self._kept: dict[str, files.KeptFile] = {}  # the views' files (files.KeptFile)

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _kept_file(self, name: str) -> files.KeptFile:
        kept = self._kept.get(name)
        if kept is None:
            kept = self._kept[name] = files.KeptFile(self._file(name))
        return kept

    def procs_files(self) -> list[str]:
        return [self._file("cgroup.procs")]

    def add_pid(self, pid: int) -> None:
        files.write(self._file("cgroup.procs"), pid)

    def apply(self, limits: Limits) -> list[str]:
        # Resolve and check everything before the first write: a bad device or CPU list
        # leaves a running cgroup as it was.
        cpuset.check_limits(limits)
        rules = None if limits.devices is None else devices.allowlist(limits.devices)
        plan = v2_plan(limits, files.listdir_files(self.path))
        for name, value in plan.writes:
            files.write(self._file(name), value)
        if rules is not None:
            devices_bpf.install(self._bpf, self.path, rules)
        self.unsupported = plan.unsupported
        return list(plan.unsupported)

    def stats(self) -> CgroupStats:
        io_read, io_write = self._io()
        peak = self._file("memory.peak")
        return CgroupStats(
            memory_current=self.memory_current(),
            memory_peak=files.read_int(peak) if os.path.exists(peak) else None,
            cpu_usage_usec=files.read_keyed(self._file("cpu.stat")).get("usage_usec", 0),
            pids_current=files.read_int(self._file("pids.current")),
            oom_kills=self.oom_kill_count(),
            io_read_bytes=io_read,
            io_write_bytes=io_write,
            pressure=pressure.read_pressure(self.path),
        )

    def sample(self) -> CgroupSample:
        io_read, io_write = self._io()
        cpu_stat = self._kept_file("cpu.stat")
        return CgroupSample(
            memory_current=self.memory_current(),
            cpu_usage_usec=files.parse_keyed(cpu_stat.read(), cpu_stat.path).get("usage_usec", 0),
            pids_current=self._kept_file("pids.current").read_int(),
            io_read_bytes=io_read,
            io_write_bytes=io_write,
            memory_pressure=pressure.read_psi(self._file("memory.pressure")),
        )

    def _io(self) -> tuple[int | None, int | None]:
        # io.stat exists only where the io controller is enabled for the unit.
        try:
            text = self._kept_file("io.stat").read()
        except CgroupError:
            return None, None
        return pressure.parse_io_stat(text)

    def memory_current(self) -> int:
        return self._kept_file("memory.current").read_int()

    def memory_reader(self) -> Callable[[], int]:
        return self._kept_file("memory.current").read_int

    def oom_kill_count(self) -> int:
        return files.read_keyed(self._file("memory.events")).get("oom_kill", 0)

    def pids(self) -> list[int]:
        return files.read_pids(self._file("cgroup.procs"))

    def is_populated(self) -> bool:
        # cgroup.events "populated" also counts descendants; units have none, and the
        # pid list works on a fake cgroupfs too.
        return bool(self.pids())

    def kill_all(self) -> None:
        _kill_all(self.path, self.pids)

    def destroy(self) -> None:
        for kept in self._kept.values():
            kept.close()
        if not os.path.isdir(self.path):
            return
        if self.is_populated():
            self.kill_all()
        # rmdir would release the filter too, but only once the kernel frees the dead cgroup
        # (later, if anything still pins it); detaching now makes teardown observable. The
        # rmdir happens even if the detach failed: the filter then goes with the cgroup.
        try:
            devices_bpf.remove(self._bpf, self.path)
        finally:
            files.rmdir(self.path)

    def watch_oom(
        self, loop: asyncio.AbstractEventLoop, callback: Callable[[OomEvent], None]
    ) -> Closeable:
        return oom.watch_memory_events(loop, self.name, self._file("memory.events"), callback)

    def watch_pressure(
        self,
        loop: asyncio.AbstractEventLoop,
        resource: str,
        kind: str,
        threshold: float,
        callback: Callable[[], None],
    ) -> Closeable:
        path = self._pressure_file(resource)
        line = pressure_trigger.trigger_line(kind, threshold)
        return pressure_trigger.PressureTrigger(loop, path, line, callback)

    def pressure_average(self, resource: str, kind: str, window: str) -> float | None:
        return pressure_trigger.read_average(self._pressure_file(resource), kind, window)

    def _pressure_file(self, resource: str) -> str:
        if resource not in pressure.RESOURCES:
            raise CgroupError(f"no pressure file for {resource!r}")
        return self._file(f"{resource}.pressure")

    def subgroup(self, name: str) -> V2Subgroup:
        sub = V2Subgroup(os.path.join(self.path, name))
        files.mkdir(sub.path)
        return sub


class V2Subgroup:
    """A child of a unit's cgroup. It gets no device filter of its own: the unit's applies to
    every descendant (all programs attached on the way up must allow an access)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def procs_files(self) -> list[str]:
        return [os.path.join(self.path, "cgroup.procs")]

    def pids(self) -> list[int]:
        return files.read_pids(os.path.join(self.path, "cgroup.procs"))

    def kill_all(self) -> None:
        _kill_all(self.path, self.pids)

    def destroy(self) -> None:
        if not os.path.isdir(self.path):
            return
        if self.pids():
            self.kill_all()
        files.rmdir(self.path)


# Linux >= 5.14: the kernel kills every task, forking or not, in one write.
KILL_FILE = "cgroup.kill"


def _kill_all(path: str, pids: Callable[[], list[int]]) -> None:
    kill = os.path.join(path, KILL_FILE)
    if os.path.exists(kill):
        files.write(kill, "1")
        if teardown.wait_until(lambda: not pids(), teardown.KILL_TIMEOUT):
            return
    teardown.freeze_and_kill(path, pids, lambda: _freeze(path), lambda: _thaw(path))


def _freeze(path: str) -> None:
    files.write(os.path.join(path, "cgroup.freeze"), "1")
    events = os.path.join(path, "cgroup.events")
    teardown.wait_until(
        lambda: files.read_keyed(events).get("frozen") == 1, teardown.FREEZE_TIMEOUT
    )


def _thaw(path: str) -> None:
    files.write(os.path.join(path, "cgroup.freeze"), "0")
