"""Benchmark: a reload of 1000 units with one changed (target: < 100 ms per reconcile pass).

Runs the real Reconciler with the real UnitLoader on 1000 unit files; cgroups are stubs and the
launcher posix_spawns the unit's command directly (no namespaces), so the figure is the daemon's
own cost: scan the directory, re-parse what changed, diff, hand out actions. Prints figures; it
is not a pass/fail test. The units get user-namespace ranges (engine/idranges.py) as the
daemon's do. `--profile` prints where the one-change reloads' CPU time went (cProfile): the
quick way to look at the scale bench's reload (`--only scale`, ~6 min) at 5000 units. The
cyclic collector's time inside the one-change reloads is printed too (gc.callbacks): with
CPython's default thresholds a full collection walks every unit's objects, and a reload that
sets one off pays for it; `--default-gc` runs without the daemon's settings (gcpolicy.py) to
show the difference.

    .venv/bin/python tests/bench/bench_reconcile.py [--units 1000] [--rounds 20] [--profile]
        [--no-watch] [--default-gc]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import logging
import os
import pstats
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor import log
from supervisor.cgroups import CgroupSample, CgroupStats, Limits
from supervisor.config import DaemonConfig
from supervisor.daemon import tune_gc
from supervisor.engine import logwriter
from supervisor.engine.idranges import IdRanges
from supervisor.engine.reconciler import Reconciler
from supervisor.engine.run import Host
from supervisor.engine.store import Store
from supervisor.unit.loader import UnitLoader


class _Closer:
    def close(self) -> None:
        pass


@dataclass
class StubCgroup:
    name: str
    limits: Limits
    applied: int = 0

    def procs_files(self) -> list[str]:
        return []

    def apply(self, limits: Limits) -> list[str]:
        self.limits, self.applied = limits, self.applied + 1
        return []

    def stats(self) -> CgroupStats:
        return CgroupStats(0, None, 0, 1, 0)

    def sample(self) -> CgroupSample:
        return CgroupSample(0, 0, 1, None, None, None)

    def memory_current(self) -> int:
        return 0

    def memory_reader(self) -> Callable[[], int]:
        return self.memory_current

    def oom_kill_count(self) -> int:
        return 0

    def is_populated(self) -> bool:
        return False

    def pids(self) -> list[int]:
        return []

    def kill_all(self) -> None:
        pass

    def destroy(self) -> None:
        pass

    def watch_oom(self, loop: Any, callback: Any) -> _Closer:
        return _Closer()


class StubManager:
    version = 0
    oom_watch_fds = 0
    renames = False  # as cgroup2: each ended run's cgroup is removed, none kept spare

    def __init__(self) -> None:
        self.created = 0

    def create(self, unit: str, limits: Limits) -> StubCgroup:
        self.created += 1
        return StubCgroup(unit, limits)

    def open(self, unit: str) -> None:
        return None

    def list_units(self) -> list[str]:
        return []

    def unit_of(self, cgroup_path: str) -> str | None:
        return cgroup_path.rpartition("/")[2] or None


@dataclass
class Started:
    pid: int
    trace: list[tuple[str, int]] = field(default_factory=list)

    async def go(self) -> None:
        pass

    def abort(self) -> None:
        pass


class SpawnLauncher:
    """Each "sandbox" is a plain child process running the unit's exec."""

    def __init__(self) -> None:
        self.count = 0
        self.pids: list[int] = []

    def kill_all(self) -> None:
        """SIGKILL every child still running (a bench that failed left its runners' services
        running, as the reconciler does on an unexpected error) and reap them."""
        for pid in self.pids:
            with contextlib.suppress(ChildProcessError, ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)

    async def __call__(
        self, spec: Any, cgroup: Any, output_fd: int, keep: Sequence[int], **_: Any
    ) -> Started:
        self.count += 1
        argv = list(spec.unit.service.exec)
        actions = [(os.POSIX_SPAWN_DUP2, output_fd, 1), (os.POSIX_SPAWN_DUP2, output_fd, 2)]
        pid = os.posix_spawn(argv[0], argv, {}, file_actions=actions)
        self.pids.append(pid)
        return Started(pid)


class GcClock:
    """The cyclic collector's time (gc.callbacks), and its full collections, while on."""

    def __init__(self) -> None:
        self.on, self.seconds, self.full = False, 0.0, 0
        self._began = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        elif self.on:
            self.seconds += time.perf_counter() - self._began
            self.full += info["generation"] == 2

    def close(self) -> None:
        gc.callbacks.remove(self._callback)


class TimedLoader:
    """The real loader, timed, to tell its share of a reload from the engine's."""

    def __init__(self, watch: bool) -> None:
        self.inner, self.last = UnitLoader(watch=watch), 0.0

    def load_directory(self, directory: Path) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner.load_directory(directory)
        finally:
            self.last = time.perf_counter() - t0


UNIT = """[service]
exec = ["/usr/bin/sleep", "{n}"]
env = {{ LANG = "C.UTF-8", UNIT = "u{i}" }}
[resources]
memory_max = "64M"
pids_max = 128
[restart]
policy = "always"
"""


async def bench(
    units: int,
    rounds: int,
    base: Path,
    profile: cProfile.Profile | None,
    watch: bool,
    *,
    daemon_gc: bool = True,
) -> None:
    units_dir = base / "units"
    units_dir.mkdir()
    for i in range(units):
        (units_dir / f"u{i:04d}.toml").write_text(UNIT.format(i=i, n=1000))
    config = DaemonConfig(units_dir=units_dir, state_dir=base / "state", log_dir=base / "log")
    store = Store(config.state_dir)
    store.prepare()
    launcher, manager = SpawnLauncher(), StubManager()
    ranges = IdRanges(base / "data", config.pool, [])
    host = Host(asyncio.get_running_loop(), manager, launcher, id_ranges=ranges)
    loader = TimedLoader(watch)
    reconciler = Reconciler(config, host, loader, store)
    if daemon_gc:
        tune_gc(reconciler)
    try:
        await _rounds(reconciler, units, rounds, profile)
    finally:
        launcher.kill_all()
        loader.inner.close()


async def _rounds(
    reconciler: Reconciler, units: int, rounds: int, profile: cProfile.Profile | None
) -> None:
    loader, launcher = reconciler.loader, reconciler.host.launcher
    assert isinstance(loader, TimedLoader) and isinstance(launcher, SpawnLauncher)
    units_dir = reconciler.config.units_dir
    async with reconciler as rec:
        t0 = time.perf_counter()
        first = await rec.reload()
        cold = time.perf_counter() - t0
        await asyncio.sleep(1.0)  # let every runner launch
        print(f"cold load of {len(first.started)} units: {cold * 1000:.1f} ms "
              f"(launches after 1 s: {launcher.count})")  # fmt: skip
        passes: list[float] = []
        cpu: list[float] = []
        loads: list[float] = []
        clock = GcClock()
        for r in range(rounds):
            target = units_dir / f"u{(r * 37) % units:04d}.toml"
            target.write_text(UNIT.format(i=r, n=2000 + r))
            before = launcher.count
            t0, c0 = time.perf_counter(), time.process_time()
            if profile is not None:
                profile.enable()
            clock.on = True
            result = await rec.reload()
            clock.on = False
            if profile is not None:
                profile.disable()
            passes.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            loads.append(loader.last)
            touched = result.restarted + result.started + result.stopped + result.updated
            assert touched == [target.stem], touched
            for _ in range(600):  # its old run stops first: longer on a loaded machine
                if launcher.count > before:
                    break
                await asyncio.sleep(0.05)
            assert launcher.count - before == 1, launcher.count - before
        unchanged: list[float] = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            await rec.reload()
            unchanged.append(time.perf_counter() - t0)
        print(
            f"reload, {units} units, one changed ({rounds} rounds): "
            f"median {statistics.median(passes) * 1000:.1f} ms, "
            f"max {max(passes) * 1000:.1f} ms (target < 100 ms); only that unit restarted; "
            f"CPU median {statistics.median(cpu) * 1000:.1f} ms"
        )
        clock.close()
        print(
            f"  of which the cyclic collector: {clock.seconds * 1000 / rounds:.1f} ms a "
            f"reload on average, {clock.full} full collections in {rounds} reloads"
        )
        engine = [p - load for p, load in zip(passes, loads, strict=True)]
        print(
            f"  of which loading the directory (supervisor.unit.loader): median "
            f"{statistics.median(loads) * 1000:.1f} ms; diff + actions (engine): median "
            f"{statistics.median(engine) * 1000:.1f} ms, max {max(engine) * 1000:.1f} ms"
        )
        print(f"reload, {units} units, none changed: "
              f"median {statistics.median(unchanged) * 1000:.1f} ms, "
              f"max {max(unchanged) * 1000:.1f} ms")  # fmt: skip
        t0 = time.perf_counter()
        await rec.shutdown(leave=False)
        print(f"stop of {units} units: {(time.perf_counter() - t0) * 1000:.0f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--profile", action="store_true", help="cProfile the one-change reloads")
    p.add_argument("--no-watch", action="store_true", help="lstat every file (no inotify)")
    p.add_argument("--default-gc", action="store_true",
                   help="CPython's collector settings, not the daemon's (gcpolicy.py)")  # fmt: skip
    args = p.parse_args()
    log.configure("console", level=logging.WARNING)
    profile = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="sbx-bench-") as tmp:
        asyncio.run(bench(args.units, args.rounds, Path(tmp), profile, not args.no_watch,
                          daemon_gc=not args.default_gc))  # fmt: skip
        # The log writer thread may still be opening the units' log files: the directory
        # could not be removed while it did.
        logwriter.WRITER.flush(30)
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
