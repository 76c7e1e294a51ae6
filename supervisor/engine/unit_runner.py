"""One unit's state machine, run as an asyncio task (STYLE rules 9, 10, 14).

    STOPPED/EXITED/FAILED ──start──▶ STARTING ──launched──▶ RUNNING ──exit──▶ policy
          ▲                             │ launch error           │ stop          │
          │                             ▼                        ▼               ▼
          └──────────────────────────  FAILED        STOPPING ──exit──▶ STOPPED  BACKOFF
                                                                  (or OOM policy) │ delay
                                                                      STARTING ◀──┘

Commands (start, stop, restart, remove, detach) only set intentions and wake the task; kernel
events (PID 1 exited, OOM kill) arrive through the Run's callback and wake it too. Each wake-up
the task looks at its state and intentions and takes one step, so every transition is in
`_step` and the functions it calls, and nothing changes state behind the task's back.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import deque
from collections.abc import Callable

import structlog

from supervisor.engine import status
from supervisor.engine.backoff import Backoff
from supervisor.engine.diff import Actual
from supervisor.engine.model import UnitEvent
from supervisor.engine.output import RotatingLog
from supervisor.engine.run import Host, Run, discard_cgroup, limits_from
from supervisor.engine.states import State
from supervisor.engine.store import Store, UnitRecord
from supervisor.engine.wakeup import Wakeup
from supervisor.errors import CgroupError, LaunchError
from supervisor.log import get_logger
from supervisor.unit.schema import Restart
from supervisor.unit.spec import UnitSpec

log = get_logger()
# After an OOM kill, how long PID 1 gets to show it was the victim (its exit) before the kill
# counts as one of another process.
OOM_GRACE = 0.25
# After SIGKILL to the whole cgroup, how long before the unit is reported unkillable.
KILL_TIMEOUT = 10.0


class UnitRunner:
    def __init__(
        self,
        name: str,
        spec: UnitSpec | None,
        *,
        host: Host,
        store: Store,
        sink: RotatingLog,
        emit: Callable[[UnitEvent], None],
    ) -> None:
        self.host, self.store, self.sink, self._emit = host, store, sink, emit
        self.name, self.spec = name, spec
        self.state = State.STOPPED if spec else State.INVALID
        self.error: str | None = None  # why failed / in backoff / the file is invalid
        self.invalid: list[str] = []  # current file errors (the running version stays)
        self.backoff = Backoff(spec.unit.restart if spec else Restart(), host.monotonic)
        self.restarts = 0
        self.last_exit: str | None = None
        self.recent_exits: deque[str] = deque(maxlen=10)
        self.recent_events: deque[UnitEvent] = deque(maxlen=20)
        self.oom_kills = 0
        self.oom_victims: deque[dict[str, object]] = deque(maxlen=10)
        self._last_pid = 0
        self.run: Run | None = None
        self.run_spec: UnitSpec | None = None  # the spec the current run was launched with
        self.next_start = 0.0  # monotonic time of the start out of BACKOFF
        self.launches = 0
        self._start = self._stop = self._removing = self._detaching = False
        self._stop_for_oom = False
        self._oom_seen = 0  # OOM kills of the current run already accounted
        self._wake = Wakeup()
        self._changed = asyncio.Event()

    # -- commands (from the reconciler; never block) -------------------------------------

    def start(self) -> None:
        """Start now, with a clean restart history (an operator start resets a failed unit)."""
        if self.spec is None:
            return
        self.backoff.reset()
        self._start, self._stop = True, False
        self._wake.set()

    def stop(self) -> None:
        self._start, self._stop = False, True
        self._wake.set()

    def restart(self) -> None:
        self.backoff.reset()
        self._start, self._stop = True, self.state.has_process()
        self._wake.set()

    def remove(self) -> None:
        self._removing = True
        self.stop()

    def detach(self) -> None:
        """End the task but leave a running service running (daemon exit, on_exit = leave)."""
        self._detaching = True
        self._wake.set()

    def replace(self, spec: UnitSpec) -> None:
        """A new spec for the next start; the current run keeps its own."""
        self.spec = spec
        self.backoff.policy = spec.unit.restart
        self.set_invalid([])
        if self.state is State.INVALID:
            self._set(State.STOPPED)
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
        self.invalid = list(errors)
        self._changed.set()

    def note_oom_victim(self, pid: int, command: str) -> None:
        """The kernel log named a victim in this unit's cgroup (see kmsg.py)."""
        main = pid == (self.run.pid if self.run else self._last_pid)
        self.oom_victims.append({"pid": pid, "command": command, "main": main})
        self._event("oom_victim", "warning", victim_pid=pid, command=command, main=main)

    @property
    def start_pending(self) -> bool:
        return self._start

    def resume(self, record: UnitRecord) -> None:
        """Continue where a previous daemon left off (before the task starts): re-adopt a
        running PID 1, or record `lost` if it ended while no daemon watched it."""
        self.restarts, self.last_exit, self.oom_kills = (
            record.restarts, record.last_exit, record.oom_kills
        )  # fmt: skip
        self.recent_exits.extend(record.recent_exits)
        if record.pid is None:
            state = State(record.state) if record.state in _VALUES else State.STOPPED
            if state.has_process() or state is State.BACKOFF:
                self.next_start = self.host.monotonic()  # crashed mid-launch, or was waiting
                state = State.BACKOFF
            self._set(state)
            return
        run = Run.adopt(self.host, record, self.sink, self._wake.set)
        if run is not None:
            self.run, self.run_spec = run, self.spec
            self._set(State.RUNNING)
            self._stop = record.state == State.STOPPING.value
            self._event("adopted", uptime=round(run.uptime(), 3))
            return
        leftover = self.host.cgroups.open(self.name)
        if leftover is not None:
            discard_cgroup(leftover, self.name)
        self._record_exit("lost")
        self._event("exited", "warning", reason="lost", pid=record.pid)
        ran_for = self.host.wall() - (record.started_at or 0.0)
        self.after_exit("lost", ran_for)

    async def wait(self, done: Callable[[], bool]) -> None:
        while not done():
            self._changed.clear()
            await self._changed.wait()

    # -- the task ------------------------------------------------------------------------

    async def main(self) -> None:
        with structlog.contextvars.bound_contextvars(unit=self.name):
            try:
                while not await self._step():
                    pass
            finally:
                if self.run is not None:  # cancelled: the service lives on for the next daemon
                    self._save()
                    self.run.detach()
                    self.run = None
                elif self._removing:
                    self.store.remove(self.name)

    async def _step(self) -> bool:
        """One transition; True when the task is done."""
        match self.state:
            case State.STARTING:
                self._launch()
            case State.RUNNING:
                await self._running()
            case State.STOPPING:
                await self._stopping()
            case State.BACKOFF:
                await self._backoff()
            case _:
                if self._removing or self._detaching:
                    return True
                if self._start and self.spec is not None:
                    self._start = False
                    self._set(State.STARTING)
                else:
                    self._stop = False
                    await self._wake.sleep()
        return False

    def _launch(self) -> None:
        assert self.spec is not None
        self.launches += 1
        self.backoff.record_start()
        try:
            self.run = Run.launch(self.host, self.spec, self.sink, self._wake.set)
        except (LaunchError, CgroupError) as exc:
            reason = exc.reason if isinstance(exc, LaunchError) else f"launch-error:cgroup: {exc}"
            self._record_exit(reason)
            self.error = f"could not start: {reason}"
            self._set(State.FAILED)
            self._event("failed", "error", reason=reason)
            return
        self.run_spec, self._oom_seen, self.error = self.spec, 0, None
        self._set(State.RUNNING)
        self._event("started")

    async def _running(self) -> None:
        run = self.run
        assert run is not None
        if self._detaching:
            self._save()
            run.detach()
            self.run = None
            self._event("detached")
            self._set(State.STOPPED, save=False)
            return
        if run.ended:
            self._ended(run.reason())
        elif self._account_oom():
            if self.spec and self.spec.unit.oom.policy != "continue":
                await self._wake.sleep(OOM_GRACE)  # PID 1's own exit, if it was the victim
                if not run.ended:
                    self._stop_for_oom = True
                    self._set(State.STOPPING)
        elif self._stop:
            self._stop = False
            self._set(State.STOPPING)
        else:
            await self._wake.sleep()

    async def _stopping(self) -> None:
        run, spec = self.run, self.run_spec
        assert run is not None and spec is not None
        signame, timeout = spec.unit.service.stop_signal, spec.unit.service.stop_timeout
        began = time.monotonic()
        run.signal(_signum(signame))
        self._event("stopping", signal=signame)
        if not await self._wake.sleep_until(lambda: run.ended, timeout):
            self._event("stop_timeout", "warning", elapsed=round(time.monotonic() - began, 3),
                        signal=signame)  # fmt: skip
            run.kill_all()
            if not await self._wake.sleep_until(lambda: run.ended, KILL_TIMEOUT):
                self._event("unkillable", "error", elapsed=round(time.monotonic() - began, 3))
        self._stop = False
        if self._stop_for_oom:
            self._stop_for_oom = False
            self._ended("oom-killed")
            return
        self._end_run(run.reason() if run.ended else "lost")
        self._set(State.STOPPED)
        self._event("stopped")

    async def _backoff(self) -> None:
        if self._stop or self._removing:
            self._stop = False
            self._set(State.STOPPED)
        elif self._detaching:
            self._save()
            self._set(State.STOPPED, save=False)
        elif self._start or self.host.monotonic() >= self.next_start:
            self._start = False
            self.restarts += 1
            self._set(State.STARTING)
        else:
            await self._wake.sleep(self.next_start - self.host.monotonic())

    # -- exits ---------------------------------------------------------------------------

    def _ended(self, reason: str) -> None:
        """PID 1 ended without being asked to: apply the OOM and restart policies."""
        ran_for = self.run.uptime() if self.run else 0.0
        self._end_run(reason)
        if self._stop or self._removing:
            self._stop = False
            self._set(State.STOPPED)
        elif self._start:
            self._set(State.STARTING)
        else:
            self.after_exit(reason, ran_for)

    def after_exit(self, reason: str, ran_for: float) -> None:
        assert self.spec is not None
        if reason == "oom-killed" and self.spec.unit.oom.policy == "stop":
            self.error = 'OOM-killed; not restarted ([oom] policy = "stop")'
            self._set(State.EXITED)
            return
        decision = self.backoff.on_exit(reason, ran_for)
        self.error = decision.why
        if decision.verdict == "restart":
            self.next_start = self.host.monotonic() + decision.delay
            self._set(State.BACKOFF)
            self._event("backoff", delay=decision.delay, reason=reason)
        elif decision.verdict == "give-up":
            self._set(State.FAILED)
            exits = list(self.recent_exits)
            self._event("failed", "error", reason=decision.why, recent_exits=exits)
        else:
            self.error = None
            self._set(State.EXITED)

    def _end_run(self, reason: str) -> None:
        run = self.run
        assert run is not None
        self._account_oom()
        wait_status, self._last_pid = run.status, run.pid
        run.finish()
        self.run = None
        self._record_exit(reason)
        self._event("exited", reason=reason, pid=run.pid, status=wait_status,
                    ran_for=round(run.uptime(), 3))  # fmt: skip

    def _record_exit(self, reason: str) -> None:
        self.last_exit = reason
        self.recent_exits.append(reason)

    def _account_oom(self) -> bool:
        """Count the run's new OOM kills; True if there were any."""
        if self.run is None or self.run.oom_kills <= self._oom_seen:
            return False
        new = self.run.oom_kills - self._oom_seen
        self._oom_seen = self.run.oom_kills
        self.oom_kills += new
        policy = self.spec.unit.oom.policy if self.spec else "restart"
        self._event("oom_kill", "warning", count=new, pid1_alive=not self.run.ended,
                    policy=policy)  # fmt: skip
        return True

    # -- plumbing ------------------------------------------------------------------------

    def _set(self, state: State, save: bool = True) -> None:
        self.state = state
        if save:
            self._save()
        self._changed.set()

    def _save(self) -> None:
        try:
            self.store.save(self.record())
        except OSError as exc:
            log.error("unit.state_not_saved", error=str(exc))

    def _event(self, name: str, level: str = "info", **detail: object) -> None:
        pid = self.run.pid if self.run else detail.pop("pid", None)
        bound = {"unit": self.name} | ({"pid": pid} if pid else {})
        with structlog.contextvars.bound_contextvars(**bound):
            getattr(log, level)(f"unit.{name}", state=self.state.value, **detail)
        event = UnitEvent(self.name, name, status.now(), self.state.value, dict(detail))
        self.recent_events.append(event)
        self._emit(event)

    # -- views ---------------------------------------------------------------------------

    def actual(self) -> Actual:
        s = self.spec
        return Actual(s.hash if s else None, s.restart_hash if s else None, self.state)

    def record(self) -> UnitRecord:
        return status.record(self)


_VALUES = {s.value for s in State}


def _signum(name: str) -> int:
    return int(signal.Signals[name])
