"""The reconciler: owns one UnitRunner task per unit in a TaskGroup, reloads the unit
directory, and is the `Controller` the control API calls.

A reload is: load (cached by mtime, cheap) → `diff.changes` (pure) → hand each action to its
runner (non-blocking). Nothing in a reload waits for a unit to stop or start, so a reload of a
thousand units with one change costs a directory scan and one restart request.

If a runner task fails with an unexpected exception the TaskGroup cancels the others, which
leave their services running and their state saved (as on `on_exit = "leave"`), and the daemon
exits non-zero: its restart re-adopts them. Crash-only, rather than a half-working daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from supervisor.config import DaemonConfig
from supervisor.contract import State
from supervisor.daemondirs import NETNS_DIR
from supervisor.engine import diff, images, sources, statewriter, status
from supervisor.engine.diff import Kind
from supervisor.engine.keptrelease import KeptFilesRelease
from supervisor.engine.model import ReloadResult, TopFrame, UnitEvent, UnitStatus
from supervisor.engine.ordering import Ordering
from supervisor.engine.output import RotatingLog
from supervisor.engine.ports import Networking
from supervisor.engine.run import Host, discard_leftover
from supervisor.engine.store import Store
from supervisor.engine.transient import TransientError, TransientUnits, merge
from supervisor.engine.unit_runner import UnitRunner
from supervisor.errors import UnitNotFound
from supervisor.linux import heldnetns
from supervisor.linux.kmsg import KmsgWatch, Victim
from supervisor.log import get_logger
from supervisor.unit.instances import unit_names
from supervisor.unit.spec import UnitSpec

log = get_logger()
EVENT_QUEUE = 1000  # per subscriber; the oldest events are dropped for a slow consumer


class Loaded(Protocol):
    @property
    def specs(self) -> Mapping[str, UnitSpec]: ...

    @property
    def errors(self) -> Mapping[str, Sequence[object]]: ...

    @property
    def warnings(self) -> Mapping[str, Sequence[object]]: ...

    @property
    def template_errors(self) -> Mapping[str, Sequence[object]]: ...


class Loader(Protocol):
    def load_directory(self, directory: Path) -> Loaded: ...


class Reconciler:
    def __init__(
        self,
        config: DaemonConfig,
        host: Host,
        loader: Loader,
        store: Store,
        *,
        read_kmsg: bool = True,
        network: Networking | None = None,
    ) -> None:
        self.config, self.host, self.loader, self.store = config, host, loader, store
        self.network = network
        self.runners: dict[str, UnitRunner] = {}
        self.ordering = Ordering(self.runners)
        self.transient = TransientUnits(config.state_dir / "transient")
        self._removing: set[str] = set()  # transient units being removed after their run
        self._held: set[str] = set()  # transient units made but not to be started yet
        self._creating: set[str] = set()  # transient units being written (create)
        self._closing = False  # shutting down: no more reloads of its own
        self._tasks: dict[str, asyncio.Task[None]] = {}  # current and retiring runners
        self._retiring: set[UnitRunner] = set()  # removed, still stopping (their layers stay)
        self._tg = asyncio.TaskGroup()
        self._reload_lock = asyncio.Lock()
        self._subscribers: set[asyncio.Queue[UnitEvent]] = set()
        self.event_seq = 0  # the seq of the newest event published
        self.last_reload_seconds = 0.0
        self.reload_observers: list[Callable[[float], None]] = []  # e.g. the metrics histogram
        # (kind, seconds): "start" from a launch to running, "restart" from the end of a run
        # to the next running when [restart] restarted it.
        self.timing_observers: list[Callable[[str, float], None]] = []
        # Units from beside the directory (the fleet's etcd keys), merged at every reload;
        # local units win a name clash, and `shadowed` says why in the local unit's status.
        self.sources: list[sources.UnitSource] = []
        self.shadowed: dict[str, str] = {}
        self._list_text = status.ListText()  # GET /v1/units' rows, kept as text
        self.change_observers: list[Callable[[str], None]] = []  # a unit's state changed
        self._read_kmsg = read_kmsg
        self._kmsg: KmsgWatch | None = None
        self._kept_release: KeptFilesRelease | None = None

    async def __aenter__(self) -> Reconciler:
        await self._tg.__aenter__()
        self._kmsg = KmsgWatch(self.host.loop, self._on_oom_victim) if self._read_kmsg else None
        self._kept_release = KeptFilesRelease(self.host.loop)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._kmsg is not None:
            self._kmsg.close()
        if self._kept_release is not None:
            self._kept_release.close()
        await self._tg.__aexit__(et, e, tb)

    def _on_oom_victim(self, victim: Victim) -> None:
        runner = self.runners.get(self.host.cgroups.unit_of(victim.memcg) or "")
        if runner is not None:
            runner.note_oom_victim(victim.pid, victim.command)

    # -- lifecycle -----------------------------------------------------------------------

    async def resume(self) -> None:
        """Take over what the previous daemon left in the state dir (before the first reload),
        then remove the network leftovers of sandboxes that did not survive (veths) and of
        units whose files are gone (leases). The runner tasks start only after that cleanup,
        so it never meets a veth of a launch of this daemon's."""
        resumed: list[UnitRunner] = []
        for name, record in self.store.load_all().items():
            spec = status.spec_from_json(record.spec, (record.spec_hash, record.restart_hash))
            if spec is None:
                if record.spec is not None:  # not an invalid unit's record: a broken one
                    log.warning("store.ignored", path=str(self.store.path(name)),
                                error="the recorded unit spec does not validate")  # fmt: skip
                self.store.remove(name)
                continue
            runner = self._new_runner(name, spec)
            runner.resume(record)
            resumed.append(runner)
        self.ordering.check_all()
        self._discard_unwatched_cgroups({r.name for r in resumed if r.run is not None})
        # Instances included, and the transient units (loaded at the first reload).
        names = unit_names(self.config.units_dir) | self.transient.names()
        # A source's units are known to it only once it has read them: its resumed ones
        # keep their leases meanwhile.
        known = sorted(names | {r.name for r in resumed if self._from_source(r.spec)})
        # A unit re-adopted without a file keeps its namespace until the reload removes it.
        held = self._keep_held_netns(set(known) | {r.name for r in resumed})
        if self.network is not None:
            running = [r.name for r in resumed if r.run is not None]
            # A held netns keeps its veth, rules and published ports while its unit is down.
            await self.network.cleanup(sorted(set(running) | held), known)
        for runner in resumed:
            self._spawn(runner)

    def _discard_unwatched_cgroups(self, adopted: set[str]) -> None:
        """Remove every unit cgroup no re-adopted run lives in. A launch the previous daemon
        died in has a cgroup and no recorded PID 1; were the unit's file removed meanwhile,
        no runner would ever reuse (or remove) that cgroup, and its PID 1, if forked, would
        wait in it for ever."""
        for name in self.host.cgroups.list_units():
            if name not in adopted:
                discard_leftover(self.host.cgroups, name)

    def _keep_held_netns(self, known: set[str]) -> set[str]:
        """Drop the held network namespaces of units that no longer exist (their files went
        while no daemon ran); the names of those kept."""
        directory = str(self.store.dir.parent / NETNS_DIR)  # where the runners hold them
        kept: set[str] = set()
        for name in heldnetns.listed(directory):
            if name in known:
                kept.add(name)
                continue
            heldnetns.drop(heldnetns.path_for(directory, name))
            log.info("daemon.netns_orphan_dropped", unit=name)
        return kept

    async def reload(self) -> ReloadResult:
        async with self._reload_lock:
            began = time.perf_counter()
            loaded = self.loader.load_directory(self.config.units_dir)
            specs, unit_errors = self._with_transient(loaded)
            specs, unit_errors = self._with_sources(specs, unit_errors)
            self._assign_id_ranges(specs, unit_errors)
            errors = {n: [str(e) for e in errs] for n, errs in unit_errors.items() if errs}
            same = self._same_specs(specs, errors)
            runners = self.runners
            actual = {n: runners[n].actual() for n in runners.keys() - same}
            result = ReloadResult(seq=self.event_seq)
            actions, kept = diff.changes(specs, errors, actual, same)
            # The kept first: a unit fixed back to its running version is valid again before
            # a unit started now looks at what it waits for.
            for name in kept:
                self._keep(runners[name], result, specs[name])
            result.unchanged.extend(same)  # nothing to do nor tell for these (_same_specs)
            result.unchanged.sort()
            for action in actions:
                self._apply(action, result)
            for name in list(result.started):  # once every new unit has its runner
                result.started.extend(self._pull_in(name))
            self.last_reload_seconds = time.perf_counter() - began
        for observe in self.reload_observers:
            observe(self.last_reload_seconds)
        # What `sandboxctl validate` warns about (a user or binary missing in a root
        # directory, ...): logged at every reload, as validate prints it at every run, so the
        # journal explains a launch error to come. Warnings never block a unit.
        for name, warnings in sorted(loaded.warnings.items()):
            for warning in warnings:
                log.warning("unit.warning", unit=name, problem=str(warning))
        # A template's own mistakes (a bad name in its instances) belong to no unit: without
        # this line only `sandboxctl validate` would say why an instance does not exist.
        for path, problems in sorted(loaded.template_errors.items()):
            for problem in problems:
                log.warning("unit.template_invalid", template=path, problem=str(problem))
        log.info(
            "daemon.reloaded", seconds=round(self.last_reload_seconds, 4),
            started=result.started, restarted=result.restarted, updated=result.updated,
            stopped=result.stopped, removed=result.removed, fixed=result.fixed,
            invalid=sorted(result.invalid), deferred=result.deferred,
        )  # fmt: skip
        return result

    def _same_specs(self, specs: Mapping[str, UnitSpec], errors: Mapping[str, object]) -> set[str]:
        """The units whose runner has the very spec object loaded now (the loader hands back
        the same object for an unchanged file) and is not marked invalid: kept, with nothing
        to compare, apply or say (`_keep` would only list them). A diff by identity: one
        lookup per unit instead of an `Actual` and a hash comparison (issue 23)."""
        runners = self.runners
        same = {
            name
            for name, spec in specs.items()
            if (runner := runners.get(name)) is not None
            and runner.spec is spec
            and not runner.invalid
        }
        return same - errors.keys()

    def _with_transient(
        self, loaded: Loaded
    ) -> tuple[dict[str, UnitSpec], dict[str, Sequence[object]]]:
        specs, errors, shadowed = merge(loaded.specs, loaded.errors, *self.transient.load())
        for name in shadowed:
            log.warning("unit.name_taken", unit=name, file=str(self.config.units_dir),
                        problem="a transient unit (sandboxctl run) has this name; the "
                        "file is ignored until it is removed")  # fmt: skip
        return specs, errors

    def _assign_id_ranges(
        self, specs: dict[str, UnitSpec], errors: dict[str, Sequence[object]]
    ) -> None:
        """User-namespace ranges for this reload's units (idranges.py); a unit refused one
        becomes invalid like any unit with a cross-unit error. A removed unit whose run still
        stops keeps its block until it has ended."""
        if self.host.id_ranges is None:
            return
        # Only the units without a spec here can be kept by `known` (assign: known - specs):
        # their runners alone are asked whether a run lives, not all 5000.
        runners = self.runners
        live = {n for n in runners.keys() - specs.keys() if runners[n].state.has_process()}
        known = set(errors) | live | {r.name for r in self._retiring}
        for name, refused in self.host.id_ranges.assign(specs, known).items():
            del specs[name]
            errors[name] = refused

    def _with_sources(
        self, specs: dict[str, UnitSpec], errors: dict[str, Sequence[object]]
    ) -> tuple[dict[str, UnitSpec], dict[str, Sequence[object]]]:
        shadowed: dict[str, str] = {}
        if not self.sources:  # no fleet: no per-unit map to build at every reload
            self.shadowed = shadowed
            return specs, errors
        running = {n: r.spec for n, r in self.runners.items()}
        for source in self.sources:
            specs, errors, hidden = sources.merge(source, specs, errors, running)
            shadowed |= hidden
        self.shadowed = shadowed
        return specs, errors

    def _from_source(self, spec: UnitSpec | None) -> bool:
        return spec is not None and any(spec.path.startswith(s.origin) for s in self.sources)

    def _apply(self, action: diff.Action, result: ReloadResult) -> None:
        name, spec, runner = action.name, action.spec, self.runners.get(action.name)
        match action.kind:
            case Kind.START | Kind.ADD:
                assert spec is not None
                if runner is None:
                    runner = self._new_runner(name, spec)
                    self._spawn(runner)
                else:
                    runner.replace(spec)
                if action.kind is Kind.START and name not in self._held:
                    runner.start()
                    result.started.append(name)
                else:
                    result.deferred.append(name)
            case Kind.STOP:
                assert runner is not None
                self._remove(runner, result)
            case Kind.RESTART:
                assert runner is not None and spec is not None
                runner.replace(spec)
                runner.restart()
                result.restarted.append(name)
            case Kind.REPLACE:
                assert runner is not None and spec is not None
                runner.replace(spec)
                result.deferred.append(name)
            case Kind.UPDATE_LIVE:
                assert runner is not None and spec is not None
                runner.update_live(spec)
                result.updated.append(name)
            case Kind.KEEP:  # diff.changes lists these apart (reload calls _keep)
                assert runner is not None
                self._keep(runner, result, spec)
            case Kind.INVALID | Kind.INVALID_KEEPS_RUNNING:
                if runner is None:
                    runner = self._new_runner(name, None)
                    self._spawn(runner)
                runner.set_invalid(list(action.errors))
                result.invalid[name] = list(action.errors)
        # Any action may have replaced a spec or added or removed a unit: who names whom
        # (ordering.py's index) is read again at its next use.
        self.ordering.invalidate()

    def _keep(self, runner: UnitRunner, result: ReloadResult, spec: UnitSpec | None) -> None:
        if spec is not None and runner.spec is not None and spec.unit.credentials:
            # The same meaning, but a spec read back from a state file has no secret values
            # (`value =` credentials) to start the next run with.
            runner.spec = spec
            self.ordering.invalidate()
        if runner.invalid:  # fixed back to the version that runs: nothing else to do
            result.fixed.append(runner.name)
            runner.set_invalid([])
        # A valid unit kept as it was has nothing to tell: no call for each of 5000 (issue 23).
        result.unchanged.append(runner.name)

    def _remove(self, runner: UnitRunner, result: ReloadResult) -> None:
        """Its file is gone. Only a unit with a run (or a restart pending) is stopped; one
        that never ran or whose run already ended is just removed, and says so."""
        del self.runners[runner.name]
        self.ordering.invalidate()
        live = runner.state.has_process() or runner.state is State.BACKOFF
        if live:
            self._retiring.add(runner)
        runner.remove()
        (result.stopped if live else result.removed).append(runner.name)

    def _new_runner(self, name: str, spec: UnitSpec | None) -> UnitRunner:
        sink = RotatingLog(
            self.config.log_dir / f"{name}.log", self.config.log_max_size, self.config.log_keep
        )
        runner = UnitRunner(
            name, spec, host=self.host, store=self.store, sink=sink, emit=self._emit,
            state_dir=self.config.state_dir, blocker=self.ordering.blocker,
            on_change=self._changed, network=self.network, on_timing=self._timing,
        )  # fmt: skip
        runner.tell_output_closed = name in self.transient.names()
        self.runners[name] = runner
        self.ordering.invalidate()
        return runner

    def _changed(self, name: str) -> None:
        self.ordering.changed(name)
        for observe in self.change_observers:
            observe(name)
        runner = self.runners.get(name)
        if runner is None or name in self._removing or not self.transient.removes_on_exit(name):
            return
        if self._closing:  # stopped by the daemon's exit: kept for the next daemon
            return
        # `--rm`: once a run has ended and nothing is to follow (not a restart, not backoff).
        over = runner.state.is_settled() and runner.last_exit is not None
        if over and not runner.start_pending:
            self._removing.add(name)
            self._tg.create_task(self._remove_transient(name), name=f"rm:{name}")

    async def _remove_transient(self, name: str) -> None:
        try:
            self.transient.delete(name)
            await self.reload()
        finally:
            self._removing.discard(name)

    def _timing(self, kind: str, seconds: float) -> None:
        for observe in self.timing_observers:
            observe(kind, seconds)

    def _spawn(self, runner: UnitRunner) -> None:
        previous = self._tasks.get(runner.name)
        self._tasks[runner.name] = self._tg.create_task(
            self._supervise(runner, previous), name=f"unit:{runner.name}"
        )

    async def _supervise(self, runner: UnitRunner, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            # The same name removed and re-added before its old run ended: one cgroup, so
            # the new runner waits for the old one to finish stopping.
            await asyncio.wait([previous])
        try:
            await runner.main()
        finally:
            self._retiring.discard(runner)
            if self._tasks.get(runner.name) is asyncio.current_task():
                del self._tasks[runner.name]
            ranges = self.host.id_ranges
            if runner.forgotten and runner.name not in self.runners and ranges is not None:
                # A removed unit kept its id block while its run stopped; the run has ended,
                # so the block (and its held user namespace) goes back now, not at whichever
                # reload comes next. Re-added meanwhile, the new unit has it.
                ranges.release(runner.name)

    async def shutdown(self, leave: bool) -> None:
        """Stop every unit (or leave them running) and wait for every runner task to end."""
        self._closing = True
        for runner in list(self.runners.values()):
            if leave:
                runner.detach()
            else:
                runner.remove(forget=False)  # nothing to re-adopt; the lease stays
        self.runners.clear()
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks)

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for runner in self.runners.values():
            counts[runner.state.value] = counts.get(runner.state.value, 0) + 1
        states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no units"
        return f"{len(self.runners)} units: {states}"

    # -- Controller ------------------------------------------------------------------------

    def _runner(self, name: str) -> UnitRunner:
        try:
            return self.runners[name]
        except KeyError:
            raise UnitNotFound(name) from None

    def list_units(self, *, detail: bool = False) -> list[UnitStatus]:
        return [self._status(self.runners[n], detail) for n in sorted(self.runners)]

    def list_view(self) -> list[dict[str, Any]]:
        now, runners = self.host.monotonic(), self.runners
        return [status.list_row(runners[n], now) for n in sorted(runners)]

    def list_text(self) -> str:
        runners = self.runners
        return self._list_text.text((runners[n] for n in sorted(runners)), self.host.monotonic())

    def get_unit(self, name: str) -> UnitStatus:
        return self._status(self._runner(name), True)

    def _status(self, runner: UnitRunner, detail: bool) -> UnitStatus:
        unit = status.unit_status(runner, detail=detail)
        if not detail:
            return unit
        # The reverse edges need every unit: the runner knows only its own file.
        extra = unit.extra | self.ordering.dependents(unit.name)
        if unit.name in self.shadowed:
            extra["shadowed"] = self.shadowed[unit.name]
        return dataclasses.replace(unit, extra=extra)

    def reported(self, names: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
        """Every unit's (or those of `names`) `status --json` object with its spec hash and
        origin, by name: what the fleet's status keys hold (cluster/agent.py): the list view,
        no detail (it is asked for at every change)."""
        found = {}
        chosen = self.runners if names is None else {n: self.runners[n] for n in names
                                                       if n in self.runners}  # fmt: skip
        for name, runner in chosen.items():
            unit = status.unit_status(runner)
            data = unit.to_json() | {"spec_hash": runner.spec.hash if runner.spec else None}
            data["source"] = runner.spec.path if runner.spec is not None else None
            if name in self.shadowed:
                data["shadowed"] = self.shadowed[name]
            found[name] = data
        return found

    def _pull_in(self, name: str) -> list[str]:
        """Start the units `name` requires or wants that are not up (nor on their way): a
        start brings its dependencies up (as systemd's Requires= and Wants= do), whatever
        their `autostart`. Its own start then waits for them (ordering.py)."""
        started = []
        for other in self.ordering.pulled_in(name):
            runner = self.runners.get(other)
            if runner is None or runner.spec is None or runner.start_pending:
                continue
            if runner.state.is_settled():
                runner.start()
                started.append(other)
        return started

    def top(self) -> TopFrame:
        rows = [status.top_row(self.runners[n]) for n in sorted(self.runners)]
        return TopFrame(monotonic=self.host.monotonic(), at=status.now(), units=rows)

    async def start(self, name: str) -> UnitStatus:
        runner = self._runner(name)
        if runner.spec is not None:
            self._pull_in(name)  # also for a unit already starting: it may wait for them
        if runner.spec is not None and runner.state not in (State.RUNNING, State.STARTING):
            before = runner.launches
            runner.start()
            await runner.wait(lambda: _start_settled(runner, before))
        return status.unit_status(runner)

    async def stop(self, name: str) -> UnitStatus:
        runner = self._runner(name)
        runner.stop()
        await runner.wait(lambda: runner.state.is_settled() and not runner.start_pending)
        return status.unit_status(runner)

    async def restart(self, name: str) -> UnitStatus:
        runner = self._runner(name)
        if runner.spec is not None:
            before = runner.launches
            runner.restart()
            await runner.wait(lambda: _start_settled(runner, before))
        return status.unit_status(runner)

    async def events(self) -> AsyncIterator[UnitEvent]:
        queue: asyncio.Queue[UnitEvent] = asyncio.Queue(EVENT_QUEUE)
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    def _emit(self, event: UnitEvent) -> UnitEvent:
        """Number `event` and hand it to every subscriber; the numbered event is returned for
        the unit's own recent events."""
        self.event_seq += 1
        event = dataclasses.replace(event, seq=self.event_seq)
        for queue in self._subscribers:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)
        return event

    async def create(
        self, name: str | None, unit: dict[str, Any], remove: bool, start: bool = True
    ) -> tuple[int, UnitStatus]:
        """A transient unit (transient.py): validated, written, loaded and, with `start`,
        started (unless `autostart = false`); returns once that start has had its effect, as
        `start` does, with the seq of the newest event before it existed. Without `start`
        the client starts it (`run --wait`: after it follows the log). Raises InvalidUnit,
        TransientError (the name is taken)."""
        seq = self.event_seq
        taken = set(self.runners) | unit_names(self.config.units_dir) | self.transient.names()
        taken |= self._creating
        if name is None:
            name = self.transient.fresh_name(taken)
        elif name in taken:
            raise TransientError(f"a unit named {name} exists already")
        # Validated here; written on the state writer thread (a stalled state dir holds this
        # request, never the loop). The name is reserved meanwhile: a second request for it,
        # answered while this one waits, must not write it too.
        write = self.transient.prepare(name, unit, remove)
        self._creating.add(name)
        try:
            await statewriter.run_on(self.store.writer, write)
        finally:
            self._creating.discard(name)
        for old in self.config.log_dir.glob(f"{name}.log*"):
            old.unlink(missing_ok=True)  # a new unit: `run --wait` prints its output from byte 0
        if not start:
            self._held.add(name)
        try:
            await self.reload()
        finally:
            self._held.discard(name)
        runner = self._runner(name)
        if runner.spec is None:  # a cross-unit error: no unit is left behind
            problems = list(runner.invalid)
            self.transient.delete(name)
            await self.reload()
            raise TransientError("; ".join(problems) or f"{name} is invalid")
        await runner.wait(lambda: _start_settled(runner, 0))
        return seq, self.get_unit(name)

    async def delete(self, name: str) -> None:
        """Stop and remove a transient unit; returns once its run has ended."""
        self._runner(name)
        if name not in self.transient.names():
            raise TransientError(f"{name} is not a transient unit: remove its file instead")
        task = self._tasks.get(name)
        self.transient.delete(name)
        await self.reload()
        if task is not None:
            await asyncio.wait([task])

    def kill(self, name: str, signum: int) -> UnitStatus:
        """Send `signum` to the unit's PID 1 (what `run --wait` forwards)."""
        runner = self._runner(name)
        if runner.run is None or not runner.run.signal(signum):
            raise TransientError(f"{name} is not running")
        return self.get_unit(name)

    def log_path(self, name: str) -> str:
        self._runner(name)
        return str(self.config.log_dir / f"{name}.log")

    def _specs(self) -> list[tuple[str, UnitSpec]]:
        return [(name, r.spec) for name, r in sorted(self.runners.items()) if r.spec is not None]

    def _layers_in_use(self) -> set[str]:
        """What a unit names, and what a run still runs on: a reload may have moved a unit to
        another image while its old run stops, or removed it while it stops."""
        runners = [*self.runners.values(), *self._retiring]
        specs = [s for r in runners for s in (r.spec, r.run_spec) if s is not None]
        return images.in_use(specs)

    async def images(self) -> dict[str, Any]:
        stored = await self.host.images.stored() if self.host.images else {}
        return images.report(self._specs(), stored)

    async def prune_images(self) -> dict[str, Any]:
        if self.host.images is None:
            return {"removed": 0, "freed": 0}
        # Under the reload lock: a reload cannot bring in a unit on a layer being removed.
        async with self._reload_lock:
            removed = await self.host.images.prune(self._layers_in_use())
        return {"removed": len(removed), "freed": sum(removed.values())}


def _start_settled(runner: UnitRunner, launches_before: int) -> bool:
    """A start request has had its effect: a launch happened and is over (the run is ready or
    ended), or the unit waits for its `after` units, or the request was dropped."""
    if runner.launches > launches_before:
        return runner.state is not State.STARTING
    if runner.waiting_for is not None and runner.state is State.STARTING:
        return True
    return not runner.start_pending and runner.state.is_settled()
