"""A unit runner's state and commands, apart from its transitions (unit_runner.py).

The reconciler calls the commands; they only set intentions and wake the task, never block and
never change the state themselves. The plumbing (`_set`, `_event`, `_save`) and the views are
shared by every transition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import structlog

from supervisor.contract import State
from supervisor.daemondirs import NETNS_DIR
from supervisor.engine import status
from supervisor.engine.backoff import Backoff
from supervisor.engine.diff import Actual
from supervisor.engine.health import HealthMonitor
from supervisor.engine.listeners import Listeners
from supervisor.engine.model import UnitEvent
from supervisor.engine.nextcgroup import NextCgroup
from supervisor.engine.output import RotatingLog
from supervisor.engine.ports import Networking
from supervisor.engine.pressure import PressureMonitor
from supervisor.engine.readiness import Readiness
from supervisor.engine.restarttrace import RestartTrace
from supervisor.engine.run import Begun, Host, Run, limits_from
from supervisor.engine.states import Intent, StopReason
from supervisor.engine.store import Store, UnitRecord
from supervisor.engine.transitions import Leaving, Pending
from supervisor.engine.wakeup import Wakeup
from supervisor.errors import CgroupError
from supervisor.log import get_logger
from supervisor.unit.schema import Restart
from supervisor.unit.spec import UnitSpec
from supervisor.unit.userns import IdRange

log = get_logger()
Blocker = Callable[[UnitSpec], str | None]  # why a unit may not launch yet (ordering.py)
# What status shows of a unit's past, newest last.
RECENT_EXITS, RECENT_EVENTS, OOM_VICTIMS = 10, 20, 10
_T = TypeVar("_T")
# The states in which a launch begun at an OOM kill may still get its Go (prelaunch.py): the
# OOM-killed run ending, the restart's backoff (delay 0), the restart's launch.
_TOWARDS_A_RESTART = frozenset({State.RUNNING, State.BACKOFF, State.STARTING})


def keep_last(items: list[_T], item: _T, limit: int) -> None:
    """Append `item`, dropping the oldest beyond `limit`. A list, not a deque(maxlen=):
    a deque allocates a 64-slot block at once (~600 bytes), three a unit at 5000 units."""
    items.append(item)
    if len(items) > limit:
        del items[0]


class RunnerBase:
    # One runner a unit: slots, not a ~1.6 KB __dict__ each (issue 23: the daemon's heap per
    # unit); an attribute set in __init__ or later is named here.
    __slots__ = (
        "_begun",
        "_blocked_by",
        "_blocker",
        "_changed",
        "_emit",
        "_exit_told",
        "_last_pid",
        "_launch_began",
        "_leaving",
        "_on_change",
        "_on_timing",
        "_oom_seen",
        "_pending",
        "_restart_from",
        "_run_ended_at",
        "_stop_reason",
        "_trace",
        "_wake",
        "backoff",
        "error",
        "forgotten",
        "health",
        "host",
        "invalid",
        "last_exit",
        "launches",
        "listeners",
        "name",
        "network",
        "next_cgroup",
        "next_start",
        "oom_kills",
        "oom_victims",
        "pressure",
        "readiness",
        "recent_events",
        "recent_exits",
        "restarts",
        "run",
        "run_spec",
        "sink",
        "spec",
        "state",
        "store",
        "tell_output_closed",
        "waiting_for",
    )

    def __init__(
        self,
        name: str,
        spec: UnitSpec | None,
        *,
        host: Host,
        store: Store,
        sink: RotatingLog,
        emit: Callable[[UnitEvent], UnitEvent],
        state_dir: Path | None = None,
        blocker: Blocker | None = None,
        on_change: Callable[[str], None] | None = None,
        network: Networking | None = None,
        on_timing: Callable[[str, float], None] | None = None,
    ) -> None:
        self.host, self.store, self.sink, self._emit = host, store, sink, emit
        # ("start" | "restart", seconds) for the daemon's histograms (api/metrics.py).
        self._on_timing = on_timing
        self.network = network
        self._blocker, self._on_change = blocker, on_change
        self.name, self.spec = name, spec
        self.state = State.STOPPED if spec else State.INVALID
        self.error: str | None = None  # why failed / in backoff / the file is invalid
        self.invalid: list[str] = []  # current file errors (the running version stays)
        self.backoff = Backoff(spec.unit.restart if spec else Restart(), host.monotonic)
        self.restarts = 0
        self.last_exit: str | None = None
        self.recent_exits: list[str] = []  # at most RECENT_EXITS (keep_last)
        self.recent_events: list[UnitEvent] = []  # at most RECENT_EVENTS
        self.oom_kills = 0
        self.oom_victims: list[dict[str, object]] = []  # at most OOM_VICTIMS
        self._last_pid = 0
        self.run: Run | None = None
        state_dir = state_dir if state_dir is not None else store.dir.parent
        # [[listen]]: held across the service's restarts, inet ones in a held netns
        self.listeners = Listeners(name, str(state_dir / NETNS_DIR))
        self.run_spec: UnitSpec | None = None  # the spec the current run was launched with
        self.next_start = 0.0  # monotonic time of the start out of BACKOFF
        self.launches = 0
        self._launch_began: float | None = None  # monotonic: the launch not running yet
        self._restart_from: float | None = None  # monotonic: the end of a run being restarted
        self._run_ended_at = 0.0
        # The restart under way, when restarts are traced (restarttrace.py).
        self._trace: RestartTrace | None = None
        self._pending = Pending.NONE  # a command not carried out yet
        self._leaving = Leaving.STAYING  # whether (and how) the task is ending
        self.forgotten = False  # its file is gone and its last run has ended: nothing is left
        self._stop_reason: StopReason | None = None  # why the daemon itself ends the run
        self.waiting_for: str | None = None  # the `after` unit a start waits for, in words
        self._blocked_by: str | None = None  # what the last look found to wait for
        self._oom_seen = 0  # OOM kills of the current run already accounted
        # Say `output_closed` after each run (transient units: what `run --wait` waits for).
        self.tell_output_closed = False
        # The `exited` event of a run that just ended, told by the next `_set`: an event
        # carries the state after it, and what an exit leads to (backoff, failed, a restart)
        # is decided only after the run is cleaned up.
        self._exit_told: tuple[str, dict[str, object]] | None = None
        self._wake = Wakeup(host.monotonic)
        # Made by the first `wait` (tests, `run --wait`): an Event is ~760 bytes a unit.
        self._changed: asyncio.Event | None = None
        self.readiness = Readiness(
            name, state_dir, host.loop, host.monotonic, self._wake.set, self._event
        )
        self.health = HealthMonitor(name, host.loop, host.monotonic, self._health_changed,
                                    self._event, prober=host.prober)  # fmt: skip
        self.pressure = PressureMonitor(name, host.loop, host.monotonic, self._wake.set,
                                        self._event)  # fmt: skip
        # The next run's cgroup made ahead, the ended runs' removed after (nextcgroup.py).
        self.next_cgroup = NextCgroup(name, host.cgroups, host.loop)
        # The next run launched up to its Go at an OOM kill (prelaunch.py), or None.
        self._begun: Begun | None = None

    # -- commands (from the reconciler; never block) -------------------------------------

    def start(self) -> None:
        """Start now, with a clean restart history (an operator start resets a failed unit)."""
        if self.spec is None:
            return
        self.backoff.reset()
        self._pending = Pending.START
        self._wake.set()

    def stop(self) -> None:
        self._pending = Pending.STOP
        self._save_intent()
        self._wake.set()

    def restart(self) -> None:
        self.backoff.reset()
        self._pending = Pending.RESTART if self.state.has_process() else Pending.START
        self._save_intent()
        self._wake.set()

    def remove(self, forget: bool = True) -> None:
        """Stop and drop the unit's state; `forget`: its file is gone, free its lease too
        (not on daemon shutdown, after which the unit keeps its address)."""
        self._leaving = Leaving.FORGOTTEN if forget else Leaving.REMOVED
        self.stop()

    def poke(self) -> None:
        """Something this unit may wait for changed (a dependency): look again."""
        self._wake.set()

    def dependency_down(self, name: str, state: str) -> None:
        """A unit this one `requires` left `running` (now `state`): stop the run and start
        again, a start that waits for `name` to be back (ordering.py). The restart history is
        kept: this is not the unit's failure, and not an operator's fresh start either."""
        if self.run is None or self.state is State.STOPPING or self._pending.stop:
            return  # nothing running, or already ending (its policy's restart waits too)
        if self._leaving is not Leaving.STAYING:
            return
        self._pending = Pending.RESTART
        self._save_intent()
        self._event("dependency_down", "warning", dependency=name, dependency_state=state)
        self._wake.set()

    def detach(self) -> None:
        """End the task but leave a running service running (daemon exit, on_exit = leave)."""
        self._leaving = Leaving.DETACHED
        self._wake.set()

    def replace(self, spec: UnitSpec) -> None:
        """A new spec for the next start; the current run keeps its own."""
        self.spec = spec
        self.backoff.policy = spec.unit.restart
        if self.state is State.INVALID:
            self._set(State.STOPPED)  # first: `valid` says what the unit is now
        self.set_invalid([])
        self._save()

    def update_live(self, spec: UnitSpec) -> None:
        """A `[resources]`-only change: write the limits to the running cgroup."""
        self.replace(spec)
        unsupported: list[str] = []
        if self.run is not None and self.run.cgroup is not None:
            try:
                unsupported = self.run.cgroup.apply(limits_from(spec.unit.resources))
            except CgroupError as exc:
                self._event("update_failed", "error", error=str(exc))
                return
            self.run_spec = spec
        self._event("updated", resources=spec.unit.resources.model_dump(mode="json"),
                    unsupported=unsupported)  # fmt: skip

    def set_invalid(self, errors: list[str]) -> None:
        if errors and errors != self.invalid:
            self._event("invalid", "warning", errors=errors)
        elif not errors and self.invalid:
            self._event("valid")  # the file was fixed: the error in status is gone
        self.invalid = list(errors)
        self._tell_waiters()

    def note_oom_victim(self, pid: int, command: str) -> None:
        """The kernel log named a victim in this unit's cgroup (see linux/kmsg.py)."""
        main = pid == (self.run.pid if self.run else self._last_pid)
        keep_last(self.oom_victims, {"pid": pid, "command": command, "main": main}, OOM_VICTIMS)
        self._event("oom_victim", "warning", victim_pid=pid, command=command, main=main)

    @property
    def start_pending(self) -> bool:
        return self._pending.start

    @property
    def intent(self) -> Intent | StopReason | None:
        """Why the current run is being (or is about to be) ended, for the state file, so
        that a daemon killed meanwhile is succeeded by one that finishes the same job:
        RESTART (start again after the stop: `restart`, or a reload of a changed file), STOP,
        or the reason the daemon itself ends it (StopReason: then the restart policy decides).
        None while no end is under way."""
        if self.run is None:
            return None
        pending = self._pending
        if pending.start and (pending.stop or self.state is State.STOPPING):
            return Intent.RESTART
        if self.state is State.STOPPING:
            # An operator's stop outranks the daemon's own reason for ending the run.
            return Intent.STOP if pending.stop else (self._stop_reason or Intent.STOP)
        return Intent.STOP if pending.stop else None

    @property
    def oom_accounted(self) -> int:
        """The current run's OOM kills already counted in `oom_kills`."""
        return self._oom_seen

    @property
    def idle(self) -> bool:
        """The task is waiting with nothing left to act on (every command and event so far
        has been handled): what a test waits for before asserting that nothing happened."""
        return self._wake.idle

    async def wait(self, done: Callable[[], bool]) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        while not done():
            self._changed.clear()
            await self._changed.wait()

    def _tell_waiters(self) -> None:
        """Something `wait`'s `done` may read changed."""
        if self._changed is not None:
            self._changed.set()

    # -- plumbing ------------------------------------------------------------------------

    def _set(self, state: State, save: bool = True) -> None:
        self.state = state
        if self._begun is not None and state not in _TOWARDS_A_RESTART:
            self._abort_begun()
        if state.is_settled():
            self.health.clear()
            self.next_cgroup.drop()  # no restart is coming without a command
            # A start after this is an operator's, not the end of a launch or restart begun
            # before: it must not show up in the histograms as one long start.
            self._launch_began = self._restart_from = None
            self._trace = None
        if save:
            self._save()
        if self._exit_told is not None:
            (level, detail), self._exit_told = self._exit_told, None
            self._event("exited", level, **detail)
        self._tell_waiters()
        if self._on_change is not None:
            self._on_change(self.name)

    def _abort_begun(self) -> None:
        """The unit no longer heads for the restart a launch was begun for (prelaunch.py)."""
        begun, self._begun = self._begun, None
        if begun is not None:
            begun.abort()
            log.info("unit.prelaunch_aborted", unit=self.name, pid=begun.pid,
                     state=self.state.value)  # fmt: skip

    def _exited(self, level: str = "info", **detail: object) -> None:
        """The run ended: say so with the state it leads to, at the next `_set`."""
        self._exit_told = (level, detail)

    def _health_changed(self) -> None:
        self._wake.set()  # an unhealthy verdict is the task's to act on
        self._tell_waiters()
        if self._on_change is not None:
            self._on_change(self.name)

    def _save_intent(self) -> None:
        # A command's intent is queued for the disk before the task acts on it, so it lands
        # before any record of what the command led to (store.py writes a unit's records in
        # order). Saves that change nothing are skipped, so this costs nothing without a run.
        if self.run is not None:
            self._save()

    def _save(self) -> None:
        # Queued, never written here (a stalled state dir must not hold the loop); a failed
        # write is the store's to report and retry (store.py); the change stands.
        self.store.save(self.record())

    def _event(self, name: str, level: str = "info", **detail: object) -> None:
        pid = self.run.pid if self.run else detail.pop("pid", None)
        bound = {"unit": self.name} | ({"pid": pid} if pid else {})
        with structlog.contextvars.bound_contextvars(**bound):
            getattr(log, level)(f"unit.{name}", state=self.state.value, **detail)
        event = UnitEvent(self.name, name, status.now(), self.state.value, dict(detail))
        # numbered by the reconciler
        keep_last(self.recent_events, self._emit(event), RECENT_EVENTS)

    # -- views ---------------------------------------------------------------------------

    def id_range(self) -> IdRange | None:
        """The host ids of the unit's user namespace (None: it has none, or no range yet)."""
        spec, ranges = self.spec, self.host.id_ranges
        if spec is None or ranges is None or "user" not in spec.unit.sandbox.namespaces:
            return None
        return ranges.get(self.name)

    def actual(self) -> Actual:
        s = self.spec
        return Actual(s.hash if s else None, s.restart_hash if s else None, self.state)

    def record(self) -> UnitRecord:
        return status.record(self)
