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

Commands (start, stop, restart, remove, detach) only record a pending command (`Pending`) or
how the task ends (`Leaving`) and wake the task; kernel events (PID 1 exited, OOM kill), notify
messages and probe verdicts arrive through callbacks and wake it too. Each wake-up the task
gathers the facts, asks the transition table (transitions.py: `decide`, tested over every
legal combination) for the next step, and runs that step's method below, so nothing changes
state behind the task's back.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
from typing import ClassVar

import structlog

from supervisor import cgroups
from supervisor.contract import LAUNCH_ERROR, LAUNCH_RESOURCES, ExitReason, State
from supervisor.engine import prelaunch, restarttrace
from supervisor.engine.backoff import Decision
from supervisor.engine.pressure import REASONS
from supervisor.engine.restarttrace import (
    DECIDED,
    EXIT_SEEN,
    LAUNCH_BEGUN,
    OFF,
    OOM_SEEN,
    RUN_CLEANED,
    RUNNING,
    RestartTrace,
)
from supervisor.engine.run import (
    Host,
    Run,
    discard_leftover,
    limits_from,
    on_output_closed,
    run_age,
)
from supervisor.engine.runner_base import RECENT_EXITS, Blocker, RunnerBase, keep_last
from supervisor.engine.states import Intent, StopReason, intent_from
from supervisor.engine.store import UnitRecord
from supervisor.engine.transitions import Facts, Leaving, Pending, Step, decide
from supervisor.errors import CgroupError, LaunchError
from supervisor.linux import faultpoint, fdlimit
from supervisor.log import get_logger
from supervisor.unit.spec import UnitSpec

__all__ = ["Blocker", "UnitRunner"]
log = get_logger()
# After an OOM kill, how long PID 1 gets to show it was the victim (its exit) before the kill
# counts as one of another process.
OOM_GRACE = 0.25
# After SIGKILL to the whole cgroup, how long before the unit is reported unkillable.
KILL_TIMEOUT = 10.0


class UnitRunner(RunnerBase):
    __slots__ = ()

    def resume(self, record: UnitRecord) -> None:
        """Continue where a previous daemon left off (before the task starts): re-adopt a
        running PID 1, or record `lost` if it ended while no daemon watched it; either way
        finish what that daemon was doing to it (`record.intent`: a restart, a stop, or an
        end of the daemon's own such as a watchdog restart)."""
        self.restarts, self.last_exit, self.oom_kills = (
            record.restarts, record.last_exit, record.oom_kills
        )  # fmt: skip
        self.recent_exits = list(record.recent_exits[-RECENT_EXITS:])
        if self.spec is not None:
            self.listeners.resume(self.spec)
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
            self._resume_adopted(run, record, intent)
            return
        discard_leftover(self.host.cgroups, self.name, recorded_pid=record.pid)
        self._record_exit(ExitReason.LOST)
        self._exited("warning", reason=ExitReason.LOST.value, pid=record.pid,
                     intent=_value(intent))  # fmt: skip
        match intent:
            case Intent.RESTART:
                self._pending = Pending.START
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
                ran_for = run_age(record.pid_start, record.started_at, self.host.wall())
                self.after_exit(reason or ExitReason.LOST, ran_for)

    def _resume_adopted(
        self, run: Run, record: UnitRecord, intent: Intent | StopReason | None
    ) -> None:
        """A recorded PID 1 still running in the unit's cgroup: watch it again, and finish the
        intent the previous daemon had for it."""
        self.run, self.run_spec = run, self.spec
        if self.spec is not None and record.listen:
            self.listeners.adopt(self.spec, run.pidfd, record.listen)
        # A run recorded while still starting (ready = "notify", no READY=1 yet) stays so:
        # its READY=1 may still come, through the same notify directory.
        starting = record.state == State.STARTING.value and intent is None and self.spec is not None
        if self.spec is not None:
            self.readiness.begin_run(self.spec, run.cgroup, adopted=True,
                                     starting_for=run.uptime() if starting else None)  # fmt: skip
            if not starting:
                self.health.begin(self.spec, run.pid, run.cgroup)
        if starting:
            self._set(State.STARTING)
        elif intent is None:
            if self.spec is not None:
                self.pressure.begin(self.spec.unit.oom, run.cgroup, run.signal)
            self._set(State.RUNNING)
        else:  # _stopping takes over: stop_signal again (not for a self-stop), then the intent
            self._pending = Pending.START if intent is Intent.RESTART else Pending.NONE
            self._stop_reason = intent if isinstance(intent, StopReason) else None
            self._set(State.STOPPING)
        self._event("adopted", uptime=round(run.uptime(), 3), intent=_value(intent))

    # -- the task ------------------------------------------------------------------------

    async def main(self) -> None:
        # Bound in the task's own context (asyncio copies one per task), which ends with it:
        # no `with` whose generator and tokens each unit's task would hold (~0.7 KB a unit).
        structlog.contextvars.bind_contextvars(unit=self.name)
        try:
            while not await self._step():
                pass
        finally:
            self.health.end()
            self.pressure.end()
            self.readiness.close()
            self._abort_begun()
            self.next_cgroup.close()
            # The daemon's copies: a service left running keeps its own (fds 3..).
            self.listeners.close()
            if self.run is not None:  # cancelled: the service lives on for the next daemon
                self._save()
                self.run.detach()
                self.run = None
            elif self._leaving.removing:
                self.store.remove(self.name)
                # Its sockets died with the service and the daemon's copies: nothing is
                # left to hold (a daemon that leaves its services running keeps it).
                await self._drop_netns()
                if self._leaving is Leaving.FORGOTTEN:  # its file is gone
                    if self.network is not None:
                        self.network.release(self.name)
                    self.forgotten = True
                    self._event("removed")

    async def _step(self) -> bool:
        """One transition (transitions.py says which); True when the task is done."""
        facts, self._blocked_by = self._facts()
        step = decide(facts)
        if step is Step.FINISH:
            return True
        await getattr(self, self._STEPS[step])()
        return False

    # The method each step runs, by name: a table of bound methods would be ~600 bytes a unit.
    _STEPS: ClassVar[dict[Step, str]] = {
        Step.IDLE: "_idle",
        Step.BEGIN_START: "_begin_start",
        Step.ABORT_START: "_abort_start",
        Step.WAIT_FOR_DEPS: "_wait_for_deps",
        Step.LAUNCH: "_launch",
        Step.READY: "_ready",
        Step.ENDED: "_run_ended",
        Step.DETACH: "_detach",
        Step.OOM: "_oom",
        Step.STOP: "_stop",
        Step.SELF_STOP: "_self_stop",
        Step.END_FOR_REASON: "_end_for_reason",
        Step.WAIT: "_wait",
        Step.STOP_RUN: "_stopping",
        Step.CANCEL_RESTART: "_cancel_restart",
        Step.LEAVE_BACKOFF: "_leave_backoff",
        Step.RESTART: "_restart",
    }

    async def _idle(self) -> None:
        self._pending = self._pending.without_stop()  # settled: nothing left to stop
        self.next_cgroup.tidy()
        await self._wake.sleep()

    async def _begin_start(self) -> None:
        self._pending = self._pending.without_start()
        self._set(State.STARTING)

    async def _abort_start(self) -> None:
        self._pending, self.waiting_for = self._pending.without_stop(), None
        self._set(State.STOPPED, save=self._leaving is not Leaving.DETACHED)

    async def _wait_for_deps(self) -> None:
        self._pending = self._pending.without_start()
        if self._blocked_by != self.waiting_for:
            self.waiting_for = self._blocked_by
            self._event("waiting", reason=self._blocked_by)
            self._tell_waiters()
        self.next_cgroup.tidy()
        await self._wake.sleep()

    async def _run_ended(self) -> None:
        assert self.run is not None
        await self._ended(self.run.reason())

    async def _stop(self) -> None:
        self._pending = self._pending.without_stop()
        self._set(State.STOPPING)

    async def _self_stop(self) -> None:
        # STOPPING=1, as systemd's "deactivating": the service began its own shutdown, so its
        # watchdog and probes no longer count, and stop_timeout bounds it.
        self._stop_reason = StopReason.SELF_STOP
        self._set(State.STOPPING)

    async def _end_for_reason(self) -> None:
        why = self.readiness.overdue() or self.health.verdict or self.pressure.verdict
        assert why is not None
        self._end_for(why)

    async def _wait(self) -> None:
        self.next_cgroup.tidy()  # a restart's delay, or a run starting: the old cgroup can go
        if self.state is State.BACKOFF:
            await self._wake.sleep(self.next_start - self.host.monotonic())
        else:
            await self._wake.sleep(self.readiness.next_deadline())

    async def _cancel_restart(self) -> None:
        self._pending = self._pending.without_stop()
        self.health.clear()
        self._set(State.STOPPED)

    async def _leave_backoff(self) -> None:
        self._save()
        self._set(State.STOPPED, save=False)

    async def _restart(self) -> None:
        self._pending = self._pending.without_start()
        self.restarts += 1
        self._restart_from = self._run_ended_at
        # Not saved: the state file keeps `backoff` until the launch gives the run a PID (and
        # saves it). A daemon that dies in between resumes both records the same way (a
        # restart from BACKOFF: resume), and the restart is one fsync'd write fewer on the
        # state writer, which shares the host's 2 cores with the launch (3 -> 2 per restart).
        self._set(State.STARTING, save=False)

    def _facts(self) -> tuple[Facts, str | None]:
        """What is true now, for `decide`; and, while starting, the `after` unit waited for."""
        run, spec = self.run, self.spec
        blocked_by = None
        if self.state is State.STARTING and run is None and spec is not None and self._blocker:
            blocked_by = self._blocker(spec)
        facts = Facts(
            state=self.state,
            pending=self._pending,
            leaving=self._leaving,
            has_spec=spec is not None,
            launched=run is not None,
            ended=run is not None and run.ended,
            ready=self.readiness.ready,
            overdue=run is not None and self.readiness.overdue() is not None,
            unhealthy=self.health.verdict is not None,
            pressured=self.pressure.verdict is not None,
            new_oom_kills=self._new_oom_kills() > 0,
            self_stopping=self.readiness.stopping,
            blocked=blocked_by is not None,
            backoff_over=self.host.monotonic() >= self.next_start,
        )
        return facts, blocked_by

    async def _launch(self) -> None:
        assert self.spec is not None
        self._pending, self.waiting_for = self._pending.without_start(), None
        self.launches += 1
        self._launch_began = self.host.monotonic()
        trace, self._trace = self._trace, None
        trace_at = restarttrace.now()
        self.backoff.record_start()
        spec = self.spec
        begun, self._begun = self._begun, None
        if begun is not None:  # launched at the OOM kill, waiting for Go (prelaunch.py)
            begun = prelaunch.take(begun, spec, self.next_cgroup.to_unit)
        try:
            if begun is not None:
                if trace is not None:  # one trace: the launch's stamps and the restart's
                    trace.extend(begun.trace.stamps)
                    begun.trace = trace
                self.run = await begun.go(self._wake.set)
            else:
                if self.listeners.netns_stale(spec):  # its network or inet sockets changed
                    await self._drop_netns()
                host = self._launch_host(spec)
                if trace is not None:
                    trace.mark(LAUNCH_BEGUN, trace_at)
                self.run = await Run.launch(
                    host, spec, self.sink, self._wake.set, trace or OFF,
                    prepared=self.next_cgroup.take,
                )  # fmt: skip
        except (LaunchError, CgroupError, OSError) as exc:
            self._launch_failed(exc)
            return
        self.run_spec, self._oom_seen, self.error = spec, 0, None
        replaced = self.spec
        if (
            replaced is not None
            and replaced.hash != spec.hash
            and replaced.restart_hash == spec.restart_hash
        ):
            # A [resources]-only change came while the launch was awaited (update_live found
            # no run to write to): this run gets the new limits now.
            self.update_live(replaced)
        self.readiness.begin_run(spec, self.run.cgroup)
        self.health.clear()
        if self.readiness.ready:  # ready = "started": running from the exec on
            self._become_running()
            self._event("started")
        else:
            self._event("started")
            # Recorded now, not only once ready: a daemon restart in between must find (and
            # re-adopt) this run, not kill it as a leftover nobody recorded.
            self._save()
            self._tell_waiters()
        if trace is not None:
            trace.mark(RUNNING)
            log.info("unit.restart_trace", unit=self.name, pid=self.run.pid,
                     t0_ns=trace.first_ns, stages=trace.stages())  # fmt: skip
        self._after_launch(spec)

    def _launch_host(self, spec: UnitSpec) -> Host:
        """The host a launch of `spec` uses: its launcher given this run's extras (notify
        socket, listen sockets, held netns, id range). LaunchError if a socket cannot be bound."""
        env, binds = self.readiness.launch_extras(spec)
        sockets = self.listeners.ensure(spec)
        ids = self.id_range()
        launcher = functools.partial(
            self.host.launcher, extra_env=env, extra_binds=binds, listen_fds=sockets,
            netns=self.listeners.netns_for(spec),
            userns=None if ids is None else (ids.base, ids.size),
        )  # fmt: skip
        return dataclasses.replace(self.host, launcher=launcher)

    def _after_launch(self, spec: UnitSpec) -> None:
        """The new run has exec'd: remove the ended run's cgroup, and make the next run's if
        this unit is restarting by its policy (a streak of restarts the policy has not yet
        forgotten: nextcgroup.py). Not while the launch waited for PID 1: with this work done
        then, the trace showed PID 1's root built about twice as slowly (load 9; most likely
        kernel contention: a new memory cgroup takes a slot for every shrinker, and each
        filesystem PID 1 mounts registers one)."""
        self.next_cgroup.tidy()
        if self.backoff.consecutive and self.spec is spec:
            self._prepare_next(spec)

    def _prepare_next(self, spec: UnitSpec) -> None:
        limits = limits_from(spec.unit.resources, spec.unit.sandbox)
        self.next_cgroup.prepare(limits, keep_for=spec.unit.restart.reset_after)

    async def _drop_netns(self) -> None:
        """Let the unit's held network namespace go, with its veth and rules."""
        if self.listeners.drop_netns():
            if self.network is not None:
                await self.network.drop(self.name)
            self._event("netns_dropped")

    def _launch_failed(self, exc: LaunchError | CgroupError | OSError) -> None:
        exhausted = fdlimit.exhausted(exc)
        if exhausted is not None:
            # The views' kept cgroup files give their fds back, and keep none from now on.
            cgroups.stop_keeping_files()
            # Out of fds: nothing is wrong with the unit, and fds come back as other runs
            # end, so it is retried through [restart] like a crash rather than failed.
            reason = f"{LAUNCH_ERROR}{LAUNCH_RESOURCES}: {fdlimit.describe(exc, exhausted)}"
            self._record_exit(reason)
            decision = self.backoff.on_exit(reason, 0.0)
            if decision.verdict == "restart":
                self._backoff(decision, reason, "warning")
                return
        elif isinstance(exc, LaunchError):
            reason = exc.reason
            self._record_exit(reason)
        else:
            stage = "cgroup" if isinstance(exc, CgroupError) else "notify"
            reason = f"{LAUNCH_ERROR}{stage}: {exc}"
            self._record_exit(reason)
        self.error = f"could not start: {reason}"
        self._set(State.FAILED)
        self._event("failed", "error", reason=reason)

    def _backoff(self, decision: Decision, reason: str, level: str = "info") -> None:
        self.error = decision.why
        self.next_start = self.host.monotonic() + decision.delay
        self._set(State.BACKOFF)
        self._event("backoff", level, delay=decision.delay, reason=str(reason))

    async def _ready(self) -> None:
        """READY=1 arrived while starting (ready = "notify")."""
        self._become_running()
        self._event("ready", notify_pid=self.readiness.ready_pid,
                    status_text=self.readiness.status_text)  # fmt: skip

    def _become_running(self) -> None:
        assert self.run is not None and self.run_spec is not None
        self.health.begin(self.run_spec, self.run.pid, self.run.cgroup)
        self.pressure.begin(self.run_spec.unit.oom, self.run.cgroup, self.run.signal)
        self._set(State.RUNNING)
        self._timing("start", self._launch_began)
        self._timing("restart", self._restart_from)
        self._launch_began = self._restart_from = None

    def _timing(self, kind: str, since: float | None) -> None:
        if since is not None and self._on_timing is not None:
            self._on_timing(kind, max(0.0, self.host.monotonic() - since))

    def _end_for(self, reason: StopReason) -> None:
        """The daemon ends the run itself (stop_signal, then SIGKILL), for `reason`."""
        self._stop_reason = reason
        level = "error" if reason is StopReason.START_TIMEOUT else "warning"
        self._set(State.STOPPING)
        self._event(reason.value.replace("-", "_"), level, **self.health.view(),
                    **self.readiness.view())  # fmt: skip

    async def _detach(self) -> None:
        """Leave the running service for the next daemon (on_exit = "leave")."""
        run = self.run
        assert run is not None
        self._save()
        self.health.end()
        self.pressure.end()
        self.readiness.end_run()
        run.detach()
        self.run = None
        self._set(State.STOPPED, save=False)
        self._event("detached")

    async def _oom(self) -> None:
        """New OOM kills in the cgroup: counted; unless oom.policy is "continue", the run ends
        (after a moment in which PID 1's own exit shows whether it was the victim)."""
        run = self.run
        assert run is not None
        self._account_oom()
        spec = self.spec
        restarts = spec and spec.unit.oom.policy == "restart" and spec.unit.restart.policy != "no"
        if spec and restarts and self._begun is None:
            # The run ends now. The kernel takes a while to tear an OOM-killed PID 1 down
            # (~10 ms for one of 24 MB here, more than after a SIGKILL): time enough to make
            # the cgroup of the run the policy starts next, and where safe to launch that run
            # up to its Go (prelaunch.py).
            self._prepare_next(spec)
            if prelaunch.eligible(spec, self.host.cgroups.renames):
                await self._begin_next(spec)
        if spec and spec.unit.oom.policy != "continue":
            await self._wake.sleep(OOM_GRACE)
            if not run.ended:
                self._stop_reason = StopReason.OOM_KILLED
                self._set(State.STOPPING)

    async def _begin_next(self, spec: UnitSpec) -> None:
        """Launch the next run up to its Go into the spare cgroup (prelaunch.py). Nothing is
        lost when that fails: the restart launches as without."""
        if self.listeners.netns_stale(spec):
            return  # the launch drops the held netns first: not while the old run may hold it
        try:
            host = self._launch_host(spec)
        except (LaunchError, OSError) as exc:
            log.info("unit.prelaunch_skipped", unit=self.name, error=str(exc))
            return
        cgroup = self.next_cgroup.hand_over(limits_from(spec.unit.resources, spec.unit.sandbox))
        if cgroup is None:
            return
        try:
            self._begun = await prelaunch.begin(host, spec, self.sink, cgroup)
        except (LaunchError, CgroupError, OSError) as exc:
            log.info("unit.prelaunch_skipped", unit=self.name, error=str(exc))
            return
        log.info("unit.prelaunch_begun", unit=self.name, pid=self._begun.pid)
        faultpoint.reached(faultpoint.PRELAUNCH_BEGUN, self.name)

    async def _stopping(self) -> None:
        run, spec = self.run, self.run_spec
        assert run is not None and spec is not None
        signame, timeout = spec.unit.service.stop_signal, spec.unit.service.stop_timeout
        began = self.host.monotonic()
        sent: str | None = signame
        if self._stop_reason is StopReason.SELF_STOP:
            sent = None
            self._event("stopping", "info", by="service", **self.readiness.view())
        else:
            run.signal(_signum(signame))
            self._event("stopping", signal=signame)
        if not await self._wake.sleep_until(lambda: run.ended, timeout):
            self._event("stop_timeout", "warning", elapsed=round(self.host.monotonic() - began, 3),
                        signal=sent)  # fmt: skip
            run.kill_all()
            if not await self._wake.sleep_until(lambda: run.ended, KILL_TIMEOUT):
                self._event("unkillable", "error", elapsed=round(self.host.monotonic() - began, 3))
        stop_reason, self._stop_reason = self._stop_reason, None
        if stop_reason is StopReason.START_TIMEOUT:
            self._pending = self._pending.without_stop()
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
        self._pending = self._pending.without_stop()
        await self._end_run(_run_reason(run))
        self._set(State.STOPPED)
        self._event("stopped")

    # -- exits ---------------------------------------------------------------------------

    async def _ended(self, reason: str) -> None:
        """PID 1 ended without being asked to: apply the OOM and restart policies."""
        ran_for = self.run.uptime() if self.run else 0.0
        await self._end_run(reason)
        if self._pending.stop or self._leaving.removing:
            self._pending = self._pending.without_stop()
            self._set(State.STOPPED)
        elif self._pending.start:
            self._set(State.STARTING)
        else:
            self.after_exit(reason, ran_for)

    def after_exit(self, reason: str, ran_for: float) -> None:
        assert self.spec is not None
        oom = self.spec.unit.oom
        if reason == ExitReason.OOM_KILLED and oom.policy == "stop":
            self.error = 'OOM-killed; not restarted ([oom] policy = "stop")'
            self._set(State.EXITED)
            return
        if reason in PRESSURE_REASONS and oom.pressure_action == "stop":
            self.error = f'ended for {reason}; not restarted ([oom] pressure_action = "stop")'
            self._set(State.EXITED)
            return
        decision = self.backoff.on_exit(reason, ran_for)
        self.error = decision.why
        if decision.verdict == "restart":
            self._backoff(decision, reason)
            if self._trace is not None:
                self._trace.mark(DECIDED)
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
        self.pressure.end()
        self.readiness.end_run()
        wait_status, self._last_pid = run.status, run.pid
        if self.tell_output_closed:
            on_output_closed(run, self._output_closed)
        run.finish(self.next_cgroup.retire)
        self.run = None
        self._run_ended_at = self.host.monotonic()
        self._trace = None
        if self.host.trace_restarts:  # kept only if the policy restarts (after_exit)
            self._trace = RestartTrace()
            if run.oom_seen_ns:
                self._trace.mark(OOM_SEEN, run.oom_seen_ns)
            if run.ended_ns:
                self._trace.mark(EXIT_SEEN, run.ended_ns)
            self._trace.mark(RUN_CLEANED)
        self._record_exit(reason)
        self._exited(reason=str(reason), pid=run.pid, status=wait_status,
                     ran_for=round(run.uptime(), 3))  # fmt: skip
        if self.network is not None and spec is not None:
            # Before anything can launch again: the next run's veth has the same name.
            await self.network.detach(spec)

    def _output_closed(self, written: int) -> None:
        """The ended run's output is all in the log: `written` bytes since the daemon began."""
        self._event("output_closed", written=written)

    def _record_exit(self, reason: str) -> None:
        self.last_exit = str(reason)  # a plain string, also for an ExitReason
        keep_last(self.recent_exits, self.last_exit, RECENT_EXITS)

    def _new_oom_kills(self) -> int:
        """OOM kills in the run's cgroup not accounted yet."""
        return 0 if self.run is None else max(0, self.run.oom_kills - self._oom_seen)

    def _account_oom(self) -> None:
        """Count the run's new OOM kills, and say so."""
        new = self._new_oom_kills()
        if self.run is None or not new:
            return
        self._oom_seen = self.run.oom_kills
        self.oom_kills += new
        policy = self.spec.unit.oom.policy if self.spec else "restart"
        self._event("oom_kill", "warning", count=new, pid1_alive=not self.run.ended,
                    policy=policy)  # fmt: skip


_VALUES = {s.value for s in State}
PRESSURE_REASONS = {r.value for r in REASONS.values()}


def _signum(name: str) -> int:
    return int(signal.Signals[name])


def _exit_reason(reason: StopReason) -> str | None:
    """The exit reason of a run the daemon ended for `reason` (None: its own, SELF_STOP)."""
    return None if reason is StopReason.SELF_STOP else reason.value


def _run_reason(run: Run) -> str:
    return run.reason() if run.ended else ExitReason.LOST.value


def _value(intent: Intent | StopReason | None) -> str | None:
    return None if intent is None else intent.value
