"""Fakes for engine tests without root: an in-memory cgroup manager and a launcher that
posix_spawns the unit's exec directly (a real child process, no namespaces)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.cgroups import CgroupSample, CgroupStats, Limits, OomEvent
from supervisor.engine.output import RotatingLog
from supervisor.engine.run import Host
from supervisor.engine.store import Store, UnitRecord
from supervisor.engine.unit_runner import UnitRunner
from supervisor.errors import CgroupError, LaunchError
from supervisor.unit.schema import UnitFile
from supervisor.unit.spec import UnitSpec


def make_spec(name: str = "svc", script: str = "sleep 100", **sections: Any) -> UnitSpec:
    data: dict[str, Any] = {"service": {"exec": ["/bin/sh", "-c", script]}}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return UnitSpec(name, f"/units/{name}.toml", UnitFile.model_validate(data))


class _Closer:
    def __init__(self, fn: Callable[[], None]) -> None:
        self.close = fn


@dataclass
class FakeCgroup:
    name: str
    limits: Limits
    oom: int = 0
    pids_: list[int] = field(default_factory=list)
    destroyed: bool = False
    callbacks: list[Callable[[OomEvent], None]] = field(default_factory=list)
    # Pressure averages by (resource, kind, window), and the PSI triggers' callbacks.
    psi: dict[tuple[str, str, str], float] = field(default_factory=dict)
    triggers: list[Callable[[], None]] = field(default_factory=list)
    trigger_args: list[tuple[str, str, float]] = field(default_factory=list)
    memory: int | None = 1 << 20  # None: the cgroup's file is gone (a read fails)

    def procs_files(self) -> list[str]:
        return []

    def add_pid(self, pid: int) -> None:
        self.pids_.append(pid)

    def apply(self, limits: Limits) -> list[str]:
        self.limits = limits
        return []

    def stats(self) -> CgroupStats:
        return CgroupStats(self.memory_current(), None, 0, len(self.pids_), self.oom)

    def sample(self) -> CgroupSample:
        return CgroupSample(self.memory_current(), 0, len(self.pids_), None, None, None)

    def memory_current(self) -> int:
        if self.memory is None:
            raise CgroupError(f"{self.name}: memory.current: gone")
        return self.memory

    def memory_reader(self) -> Callable[[], int]:
        return self.memory_current

    def oom_kill_count(self) -> int:
        return self.oom

    def pids(self) -> list[int]:
        return [p for p in self.pids_ if _alive(p)]

    def is_populated(self) -> bool:
        return bool(self.pids())

    def kill_all(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def destroy(self) -> None:
        self.kill_all()
        self.destroyed = True

    def watch_oom(
        self, loop: asyncio.AbstractEventLoop, callback: Callable[[OomEvent], None]
    ) -> _Closer:
        self.callbacks.append(callback)
        return _Closer(lambda: self.callbacks.remove(callback))

    def watch_pressure(
        self,
        loop: asyncio.AbstractEventLoop,
        resource: str,
        kind: str,
        threshold: float,
        callback: Callable[[], None],
    ) -> _Closer:
        self.triggers.append(callback)
        self.trigger_args.append((resource, kind, threshold))
        return _Closer(lambda: self.triggers.remove(callback))

    def pressure_average(self, resource: str, kind: str, window: str) -> float | None:
        return self.psi.get((resource, kind, window))

    def pressure(self, resource: str, kind: str, window: str, value: float) -> None:
        """What the kernel does: the average moves, and a trigger fires."""
        self.psi[(resource, kind, window)] = value
        for cb in list(self.triggers):
            cb()

    def oom_kill(self, victim: int | None = None) -> None:
        """What the kernel does: count, SIGKILL the victim, notify."""
        self.oom += 1
        if victim is not None:
            os.kill(victim, signal.SIGKILL)
        for cb in list(self.callbacks):
            cb(OomEvent(self.name, self.oom))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: reaped mid-read
        return False


class FakeManager:
    version = 0
    oom_watch_fds = 0

    def __init__(self) -> None:
        self.cgroups: dict[str, FakeCgroup] = {}
        self.created = 0
        self.renames = False  # True: as v1, cgroups are renamed (engine/nextcgroup.py)

    def rename(self, cgroup: FakeCgroup, name: str) -> FakeCgroup:
        if not self.renames:
            raise CgroupError("this manager cannot rename")
        if self.open(name) is not None:
            raise CgroupError(f"{name} exists")
        del self.cgroups[cgroup.name]
        cgroup.name = name
        self.cgroups[name] = cgroup
        return cgroup

    def create(self, unit: str, limits: Limits) -> FakeCgroup:
        old = self.cgroups.get(unit)
        if old is not None and not old.destroyed and old.is_populated():
            raise CgroupError(f"{unit} populated")
        self.created += 1
        self.cgroups[unit] = FakeCgroup(unit, limits)
        return self.cgroups[unit]

    def open(self, unit: str) -> FakeCgroup | None:
        cg = self.cgroups.get(unit)
        return cg if cg is not None and not cg.destroyed else None

    def list_units(self) -> list[str]:
        return [n for n, c in self.cgroups.items() if not c.destroyed]

    def unit_of(self, cgroup_path: str) -> str | None:
        return cgroup_path.rpartition("/")[2] or None


@dataclass
class Spawned:
    pid: int
    fail: str | None = None
    errno: int = 2
    trace: list[tuple[str, int]] = field(default_factory=list)
    aborted: bool = False

    async def go(self) -> None:
        if self.fail:
            raise LaunchError("svc", "exec", self.fail, self.errno)

    def abort(self) -> None:
        self.aborted = True


class FakeLauncher:
    def __init__(self) -> None:
        self.fail: str | None = None
        self.fail_errno = 2  # ENOENT, as a missing binary
        # An OOM kill in the new cgroup before the daemon holds the run (no watch yet): a
        # service that runs out of memory at once, on a busy machine.
        self.oom_at_once = False
        self.launched: list[int] = []
        self.extra_binds: list[tuple[str, str, bool]] = []

    async def __call__(
        self,
        spec: UnitSpec,
        cgroup: Any,
        output_fd: int,
        keep_fds: Sequence[int],
        *,
        extra_env: Mapping[str, str] | None = None,
        extra_binds: Sequence[tuple[str, str, bool]] = (),
        listen_fds: Sequence[tuple[int, str]] = (),
        netns: str | None = None,
        stderr_fd: int | None = None,
        userns: tuple[int, int] | None = None,
    ) -> Spawned:
        argv = ["/bin/true"] if self.fail else list(spec.unit.service.exec)
        self.extra_binds = list(extra_binds)
        err = output_fd if stderr_fd is None else stderr_fd
        pid = os.posix_spawn(
            argv[0], argv, {**os.environ, **(extra_env or {})},
            file_actions=[(os.POSIX_SPAWN_DUP2, output_fd, 1), (os.POSIX_SPAWN_DUP2, err, 2)],
        )  # fmt: skip
        cgroup.add_pid(pid)
        self.launched.append(pid)
        if self.oom_at_once:
            cgroup.oom_kill()
        return Spawned(pid, self.fail, self.fail_errno)


class ManualClock:
    """A monotonic clock that moves only when the test says so: a deadline (watchdog,
    start_timeout, stop_timeout, backoff) passes when the test advances past it, never because
    the machine was slow."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run(
    main: Callable[[Rig], Coroutine[Any, Any, None]],
    tmp_path: Path,
    clock: ManualClock | None = None,
) -> None:
    """`main(rig)` in a fresh event loop, with a rig on `clock` (default: the real clock)."""

    async def wrapper() -> None:
        await main(make_rig(tmp_path, clock))

    asyncio.run(asyncio.wait_for(wrapper(), 120))


async def until(runner: UnitRunner, done: Callable[[], bool], timeout: float = 60) -> None:
    await asyncio.wait_for(runner.wait(done), timeout)


async def finish(runner: UnitRunner, task: asyncio.Task[None]) -> None:
    """Remove the unit and wait for its task to end."""
    runner.remove()
    await asyncio.wait_for(task, 60)


async def settled(runner: UnitRunner, timeout: float = 60) -> None:
    """Until the unit's task has acted on everything handed to it and waits again."""
    async with asyncio.timeout(timeout):
        while not runner.idle:
            await asyncio.sleep(0.001)


async def advance(clock: ManualClock, runner: UnitRunner, seconds: float) -> None:
    """Move the clock, let the task look at it, and wait until it has acted."""
    await settled(runner)
    clock.advance(seconds)
    runner.poke()
    await settled(runner)


@dataclass
class Rig:
    host: Host
    manager: FakeManager
    launcher: FakeLauncher
    store: Store
    log_dir: Path
    events: list[Any] = field(default_factory=list)

    def runner(self, spec: UnitSpec) -> UnitRunner:
        sink = RotatingLog(self.log_dir / f"{spec.name}.log", 1 << 20, 2)
        return UnitRunner(
            spec.name, spec, host=self.host, store=self.store, sink=sink, emit=self.emit
        )

    def emit(self, event: Any) -> Any:
        self.events.append(event)
        return event


class FlushedStore(Store):
    """A store whose `load_all` reads what every earlier save and removal left on disk: they
    are written on the state writer thread, and a test reads the files right after acting."""

    def load_all(self) -> dict[str, UnitRecord]:
        assert self.flush(30), "the state writer is still busy"
        return super().load_all()


def make_rig(tmp_path: Path, clock: ManualClock | None = None) -> Rig:
    """`clock`: the engine's monotonic clock (default: the real one)."""
    manager, launcher = FakeManager(), FakeLauncher()
    host = Host(asyncio.get_running_loop(), manager, launcher, monotonic=clock or time.monotonic)
    store = FlushedStore(tmp_path / "state")
    store.prepare()
    return Rig(host, manager, launcher, store, tmp_path / "log")
