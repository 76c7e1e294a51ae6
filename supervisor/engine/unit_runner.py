"""One unit's state machine, run as an asyncio task.

                                  waiting for `after` units
                                        ▲    │
    STOPPED/EXITED/FAILED ──start──▶ STARTING ──launched, ready──▶ RUNNING ──exit──▶ policy
          ▲                             │ launch error,               │ stop, watchdog, │
          │                             ▼ start timeout               ▼ unhealthy, OOM  ▼
          └──────────────────────────  FAILED        STOPPING ──exit──▶ STOPPED  BACKOFF
                                                             (or policy)         │ delay
                                                                      STARTING ◀──┘

STARTING has two halves: before the launch it waits until every `after` unit is ready
(ordering.py); after it, with `ready = "notify"`, until READY=1 or `start_timeout`
(readiness.py). RUNNING ends by itself (exit, OOM kill) or is ended for a reason: the
watchdog (readiness.py) or `retries` failed probes (health.py), both then restart through the
restart policy like a crash. A service that says STOPPING=1 goes to STOPPING on its own: no
stop_signal, but stop_timeout still ends with SIGKILL, and its exit goes to the policy.

Commands (start, stop, restart, remove, detach) only set intentions and wake the task; kernel
events (PID 1 exited, OOM kill), notify messages and probe verdicts arrive through callbacks and
wake it too. Each wake-up the task looks at its state and intentions and takes one step, so
every transition is in `_step` and the functions it calls, and nothing changes state behind the
task's back.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import time

import structlog

from supervisor.contract import LAUNCH_ERROR, ExitReason, State
from supervisor.engine.run import Run, discard_cgroup
from supervisor.engine.runner_base import Blocker, RunnerBase
from supervisor.engine.states import Intent, StopReason, intent_from
from supervisor.engine.store import UnitRecord
from supervisor.errors import CgroupError, LaunchError

__all__ = ["Blocker", "UnitRunner"]
# After an OOM kill, how long PID 1 gets to show it was the victim (its exit) before the kill
# counts as one of another process.
OOM_GRACE = 0.25
# After SIGKILL to the whole cgroup, how long before the unit is reported unkillable.
KILL_TIMEOUT = 10.0


class UnitRunner(RunnerBase):
    def resume(self, record: UnitRecord) -> None:
        """Continue where a previous daemon left off (before the task starts): re-adopt a
        running PID 1, or record `lost` if it ended while no daemon watched it; either way
        finish what that daemon was doing to it (`record.intent`: a restart, a stop, or an
        end of the daemon's own such as a watchdog restart)."""
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
        # Records written before `intent` existed say only `stopping`: a stop.
        stopping = record.state == State.STOPPING.value
        intent = intent_from(record.intent) or (Intent.STOP if stopping else None)
        run = Run.adopt(self.host, record, self.sink, self._wake.set)
        if run is not None:
            self.run, self.run_spec = run, self.spec
            if self.spec is not None:
                self.readiness.begin_run(self.spec, run.cgroup, adopted=True)
                self.health.begin(self.spec, run.pid, run.cgroup)
            if intent is None:
                self._set(State.RUNNING)
            else:  # _stopping takes over: stop_signal again (not for a self-stop), then the intent
                self._start = intent is Intent.RESTART
                self._stop_reason = intent if isinstance(intent, StopReason) else None
                self._set(State.STOPPING)
            self._event("adopted", uptime=round(run.uptime(), 3), intent=_value(intent))
            return
        leftover = self.host.cgroups.open(self.name)
        if leftover is not None:
            discard_cgroup(leftover, self.name)
        self._record_exit(ExitReason.LOST)
        self._event("exited", "warning", reason=ExitReason.LOST.value, pid=record.pid,
                    intent=_value(intent))  # fmt: skip
        match intent:
            case Intent.RESTART:
                self._start = True
                self._set(State.STOPPED)
            case Intent.STOP:
                self._set(State.STOPPED)
            case StopReason.START_TIMEOUT if self.spec is not None:
                timeout = self.spec.unit.service.start_timeout
                self.error = f"not ready within {timeout:g}s (start_timeout)"
                self._set(State.FAILED)
            case _:
                # A run that was ending itself (self-stop) left no exit status either: lost.
                reason = _exit_reason(intent) if isinstance(intent, StopReason) else None
                self.after_exit(reason or ExitReason.LOST,
                                self.host.wall() - (record.started_at or 0.0))  # fmt: skip

    # -- the task ------------------------------------------------------------------------

    async def main(self) -> None:
        with structlog.contextvars.bound_contextvars(unit=self.name):
            try:
                while not await self._step():
                    pass
            finally:
                self.health.end()
                self.readiness.close()
                if self.run is not None:  # cancelled: the service lives on for the next daemon
                    self._save()
                    self.run.detach()
                    self.run = None
                elif self._removing:
                    self.store.remove(self.name)
                    if self._forget:  # its file is gone (not a daemon shutdown)
                        if self.network is not None:
                            self.network.release(self.name)
                        self._event("removed")

    async def _step(self) -> bool:
        """One transition; True when the task is done."""
        match self.state:
            case State.STARTING if self.run is None:
                await self._before_launch()
            case State.STARTING:
                await self._until_ready()
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

    async def _before_launch(self) -> None:
        """STARTING, nothing launched yet: wait for the `after` units, then launch."""
        assert self.spec is not None
        if self._stop or self._removing or self._detaching:
            self._stop, self.waiting_for = False, None
            self._set(State.STOPPED, save=not self._detaching)
            return
        self._start = False
        blocked = self._blocker(self.spec) if self._blocker else None
        if blocked is None:
            self.waiting_for = None
            await self._launch()
        else:
            if blocked != self.waiting_for:
                self.waiting_for = blocked
                self._event("waiting", reason=blocked)
                self._changed.set()
            await self._wake.sleep()

    async def _launch(self) -> None:
        assert self.spec is not None
        self.launches += 1
        self.backoff.record_start()
        spec = self.spec
        try:
            env, binds = self.readiness.launch_extras(spec)
            launcher = functools.partial(self.host.launcher, extra_env=env, extra_binds=binds)
            host = dataclasses.replace(self.host, launcher=launcher)
            self.run = await Run.launch(host, spec, self.sink, self._wake.set)
        except (LaunchError, CgroupError, OSError) as exc:
            stage = "cgroup" if isinstance(exc, CgroupError) else "notify"
            reason = exc.reason if isinstance(exc, LaunchError) else f"{LAUNCH_ERROR}{stage}: {exc}"
            self._record_exit(reason)
            self.error = f"could not start: {reason}"
            self._set(State.FAILED)
            self._event("failed", "error", reason=reason)
            return
        self.run_spec, self._oom_seen, self.error = spec, 0, None
        self.readiness.begin_run(spec, self.run.cgroup)
        self.health.clear()
        self._event("started")
        if self.readiness.ready:
            self._ready()
        else:
            self._changed.set()

    def _ready(self) -> None:
        assert self.run is not None and self.run_spec is not None
        self.health.begin(self.run_spec, self.run.pid, self.run.cgroup)
        self._set(State.RUNNING)

    async def _until_ready(self) -> None:
        """STARTING, launched: wait for READY=1 (ready = "notify")."""
        run = self.run
        assert run is not None
        if run.ended:
            await self._ended(run.reason())
        elif self._stop or self._detaching:
            await self._running()
        elif self.readiness.ready:
            self._ready()
        elif (why := self.readiness.overdue()) is not None:
            self._end_for(why)
        else:
            await self._wake.sleep(self.readiness.next_deadline())

    def _end_for(self, reason: StopReason) -> None:
        """The daemon ends the run itself (stop_signal, then SIGKILL), for `reason`."""
        self._stop_reason = reason
        level = "error" if reason is StopReason.START_TIMEOUT else "warning"
        self._event(reason.value.replace("-", "_"), level, **self.health.view(),
                    **self.readiness.view())  # fmt: skip
        self._set(State.STOPPING)

    async def _running(self) -> None:
        run = self.run
        assert run is not None
        if self._detaching:
            self._save()
            self.health.end()
            self.readiness.end_run()
            run.detach()
            self.run = None
            self._event("detached")
            self._set(State.STOPPED, save=False)
            return
        if run.ended:
            await self._ended(run.reason())
        elif self._account_oom():
            if self.spec and self.spec.unit.oom.policy != "continue":
                await self._wake.sleep(OOM_GRACE)  # PID 1's own exit, if it was the victim
                if not run.ended:
                    self._stop_reason = StopReason.OOM_KILLED
                    self._set(State.STOPPING)
        elif self._stop:
            self._stop = False
            self._set(State.STOPPING)
        elif self.readiness.stopping:
            # STOPPING=1, as systemd's "deactivating": the service began its own shutdown,
            # so its watchdog and probes no longer count, and stop_timeout bounds it.
            self._stop_reason = StopReason.SELF_STOP
            self._set(State.STOPPING)
        elif (why := self.readiness.overdue() or self.health.verdict) is not None:
            self._end_for(why)
        else:
            await self._wake.sleep(self.readiness.next_deadline())

    async def _stopping(self) -> None:
        run, spec = self.run, self.run_spec
        assert run is not None and spec is not None
        signame, timeout = spec.unit.service.stop_signal, spec.unit.service.stop_timeout
        began = time.monotonic()
        sent: str | None = signame
        if self._stop_reason is StopReason.SELF_STOP:
            sent = None
            self._event("stopping", "info", by="service", **self.readiness.view())
        else:
            run.signal(_signum(signame))
            self._event("stopping", signal=signame)
        if not await self._wake.sleep_until(lambda: run.ended, timeout):
            self._event("stop_timeout", "warning", elapsed=round(time.monotonic() - began, 3),
                        signal=sent)  # fmt: skip
            run.kill_all()
            if not await self._wake.sleep_until(lambda: run.ended, KILL_TIMEOUT):
                self._event("unkillable", "error", elapsed=round(time.monotonic() - began, 3))
        stop_reason, self._stop_reason = self._stop_reason, None
        if stop_reason is StopReason.START_TIMEOUT:
            self._stop = False
            await self._end_run(ExitReason.START_TIMEOUT)
            self.error = f"not ready within {spec.unit.service.start_timeout:g}s (start_timeout)"
            self._set(State.FAILED)
            self._event("failed", "error", reason=self.error)
            return
        if stop_reason is not None:
            # Which honours a stop or restart asked for meanwhile. A self-stop is the run's
            # own end: the restart policy judges how it exited.
            await self._ended(_exit_reason(stop_reason) or _run_reason(run))
            return
        self._stop = False
        await self._end_run(_run_reason(run))
        self._set(State.STOPPED)
        self._event("stopped")

    async def _backoff(self) -> None:
        if self._stop or self._removing:
            self._stop = False
            self.health.clear()
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

    async def _ended(self, reason: str) -> None:
        """PID 1 ended without being asked to: apply the OOM and restart policies."""
        ran_for = self.run.uptime() if self.run else 0.0
        await self._end_run(reason)
        if self._stop or self._removing:
            self._stop = False
            self._set(State.STOPPED)
        elif self._start:
            self._set(State.STARTING)
        else:
            self.after_exit(reason, ran_for)

    def after_exit(self, reason: str, ran_for: float) -> None:
        assert self.spec is not None
        if reason == ExitReason.OOM_KILLED and self.spec.unit.oom.policy == "stop":
            self.error = 'OOM-killed; not restarted ([oom] policy = "stop")'
            self._set(State.EXITED)
            return
        decision = self.backoff.on_exit(reason, ran_for)
        self.error = decision.why
        if decision.verdict == "restart":
            self.next_start = self.host.monotonic() + decision.delay
            self._set(State.BACKOFF)
            self._event("backoff", delay=decision.delay, reason=str(reason))
        elif decision.verdict == "give-up":
            self._set(State.FAILED)
            exits = list(self.recent_exits)
            self._event("failed", "error", reason=decision.why, recent_exits=exits)
        else:
            self.error = None
            self._set(State.EXITED)

    async def _end_run(self, reason: str) -> None:
        run, spec = self.run, self.run_spec
        assert run is not None
        self._account_oom()
        self.health.end()  # first: the probe sub-cgroup must be gone before the unit's
        self.readiness.end_run()
        wait_status, self._last_pid = run.status, run.pid
        run.finish()
        self.run = None
        self._record_exit(reason)
        self._event("exited", reason=str(reason), pid=run.pid, status=wait_status,
                    ran_for=round(run.uptime(), 3))  # fmt: skip
        if self.network is not None and spec is not None:
            # Before anything can launch again: the next run's veth has the same name.
            await self.network.detach(spec)

    def _record_exit(self, reason: str) -> None:
        self.last_exit = str(reason)  # a plain string, also for an ExitReason
        self.recent_exits.append(self.last_exit)

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


_VALUES = {s.value for s in State}


def _signum(name: str) -> int:
    return int(signal.Signals[name])


def _exit_reason(reason: StopReason) -> str | None:
    """The exit reason of a run the daemon ended for `reason` (None: its own, SELF_STOP)."""
    return None if reason is StopReason.SELF_STOP else reason.value


def _run_reason(run: Run) -> str:
    return run.reason() if run.ended else ExitReason.LOST.value


def _value(intent: Intent | StopReason | None) -> str | None:
    return None if intent is None else intent.value
