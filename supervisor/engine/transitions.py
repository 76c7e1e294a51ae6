"""The unit runner's transition table: given what is true now, which step comes next.

The runner (unit_runner.py) wakes up when anything changes (a command, PID 1's exit, an OOM
kill, a notify message, a probe verdict, a timer), gathers the facts below and takes the one
step `decide` names; the step's code does the I/O and moves the state. So every legal
combination of state, pending command and run facts is in one table, in order of precedence
(first matching row wins), and tests/unit/engine/test_transitions.py walks all of them.

    state     | when (first match wins)                              | step
    ----------+------------------------------------------------------+---------------
    settled   | leaving (removed or detached)                        | FINISH
    (stopped, | a start is pending and there is a spec               | BEGIN_START
    exited,   | otherwise (a stale stop is dropped)                  | IDLE
    failed,   |                                                      |
    invalid)  |                                                      |
    starting, | a stop is pending, or leaving                        | ABORT_START
    no run    | blocked by an `after` unit                           | WAIT_FOR_DEPS
              | otherwise                                            | LAUNCH
    starting, | PID 1 ended                                          | ENDED
    launched  | a stop is pending, or detaching                      | (as running)
              | ready                                                | READY
              | start_timeout passed                                 | END_FOR_REASON
              | otherwise                                            | WAIT
    running   | detaching                                            | DETACH
              | PID 1 ended                                          | ENDED
              | new OOM kills in the cgroup                          | OOM
              | a stop is pending                                    | STOP
              | the service said STOPPING=1                          | SELF_STOP
              | watchdog overdue, unhealthy, or under pressure_limit | END_FOR_REASON
              | otherwise                                            | WAIT
    stopping  | always: signal, wait, escalate, then the end's policy| STOP_RUN
    backoff   | a stop is pending, or removed                        | CANCEL_RESTART
              | detaching                                            | LEAVE_BACKOFF
              | a start is pending, or the delay is over             | RESTART
              | otherwise                                            | WAIT
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from supervisor.contract import State


class Pending(enum.Enum):
    """A command the runner has not carried out yet (`start`, `stop`, `restart`, `remove`).

    RESTART is a stop and then a start: once the run is stopping, only the START half is left.
    """

    NONE = "none"
    START = "start"
    STOP = "stop"
    RESTART = "restart"

    @property
    def start(self) -> bool:
        return self in (Pending.START, Pending.RESTART)

    @property
    def stop(self) -> bool:
        return self in (Pending.STOP, Pending.RESTART)

    def without_start(self) -> Pending:
        return {Pending.START: Pending.NONE, Pending.RESTART: Pending.STOP}.get(self, self)

    def without_stop(self) -> Pending:
        return {Pending.STOP: Pending.NONE, Pending.RESTART: Pending.START}.get(self, self)


class Leaving(enum.Enum):
    """Whether the runner's task is ending, and how. One at a time: the reconciler drops a
    runner from its table when it removes it, and a shutdown ends each remaining runner one
    way (all removed, or all detached)."""

    STAYING = "staying"
    REMOVED = "removed"  # stop it; the unit's address stays (daemon shutdown, on_exit = "stop")
    FORGOTTEN = "forgotten"  # stop it and free what outlives runs: its file is gone
    DETACHED = "detached"  # leave the service running for the next daemon (on_exit = "leave")

    @property
    def removing(self) -> bool:
        return self in (Leaving.REMOVED, Leaving.FORGOTTEN)


class Step(enum.Enum):
    FINISH = "finish"  # the task ends
    BEGIN_START = "begin-start"  # -> STARTING
    IDLE = "idle"  # sleep until a command
    ABORT_START = "abort-start"  # -> STOPPED before anything was launched
    WAIT_FOR_DEPS = "wait-for-deps"  # an `after` unit is not ready yet
    LAUNCH = "launch"  # launch the sandbox (-> RUNNING when ready, FAILED on a launch error)
    ENDED = "ended"  # PID 1 ended by itself: the OOM and restart policies decide
    READY = "ready"  # -> RUNNING, probes begin
    END_FOR_REASON = "end-for-reason"  # the daemon ends the run (watchdog, health, timeout,
    # pressure)
    DETACH = "detach"  # leave the service running, -> STOPPED (not saved)
    OOM = "oom"  # count new OOM kills; unless oom.policy = "continue", end the run
    STOP = "stop"  # -> STOPPING for an operator's stop
    SELF_STOP = "self-stop"  # -> STOPPING without a signal: the service ends itself
    WAIT = "wait"  # sleep until the next deadline or wake-up
    STOP_RUN = "stop-run"  # signal, wait up to stop_timeout, SIGKILL the cgroup, then policy
    CANCEL_RESTART = "cancel-restart"  # BACKOFF -> STOPPED
    LEAVE_BACKOFF = "leave-backoff"  # BACKOFF -> STOPPED, the state file keeps `backoff`
    RESTART = "restart"  # BACKOFF -> STARTING, one more restart counted


@dataclass(frozen=True)
class Facts:
    """What the runner knows when it wakes up."""

    state: State
    pending: Pending
    leaving: Leaving
    has_spec: bool  # a valid unit file (INVALID has none)
    launched: bool  # a run exists (its PID 1 was started or adopted)
    ended: bool = False  # that run's PID 1 has ended
    ready: bool = False  # the run is ready (READY=1, or ready = "started")
    overdue: bool = False  # start_timeout or the watchdog ran out
    unhealthy: bool = False  # [health] found the run unhealthy
    pressured: bool = False  # [oom] pressure_limit held for pressure_duration (restart/stop)
    new_oom_kills: bool = False  # OOM kills in the cgroup not yet accounted
    self_stopping: bool = False  # the service said STOPPING=1
    blocked: bool = False  # an `after` unit is not ready yet
    backoff_over: bool = False  # the restart delay has passed

    def is_legal(self) -> bool:
        """Combinations the runner can be in (the table is only asked about these)."""
        if self.state in (State.RUNNING, State.STOPPING):
            return self.launched and self.has_spec
        if self.state is State.STARTING:
            return self.has_spec
        if self.state is State.INVALID and (self.has_spec or self.launched):
            return False
        return not self.launched and not self.ended


def decide(f: Facts) -> Step:
    """The next step: the table in the module docstring."""
    match f.state:
        case State.STARTING if not f.launched:
            return _starting(f)
        case State.STARTING:
            return _launched(f)
        case State.RUNNING:
            return _running(f)
        case State.STOPPING:
            return Step.STOP_RUN
        case State.BACKOFF:
            return _backoff(f)
        case _:
            return _settled(f)


def _settled(f: Facts) -> Step:
    if f.leaving is not Leaving.STAYING:
        return Step.FINISH
    return Step.BEGIN_START if f.pending.start and f.has_spec else Step.IDLE


def _starting(f: Facts) -> Step:
    if f.pending.stop or f.leaving is not Leaving.STAYING:
        return Step.ABORT_START
    return Step.WAIT_FOR_DEPS if f.blocked else Step.LAUNCH


def _launched(f: Facts) -> Step:
    if f.ended:
        return Step.ENDED
    if f.pending.stop or f.leaving is Leaving.DETACHED:
        return _running(f)
    if f.ready:
        return Step.READY
    return Step.END_FOR_REASON if f.overdue else Step.WAIT


def _running(f: Facts) -> Step:
    if f.leaving is Leaving.DETACHED:
        return Step.DETACH
    if f.ended:
        return Step.ENDED
    if f.new_oom_kills:
        return Step.OOM
    if f.pending.stop:
        return Step.STOP
    if f.self_stopping:
        return Step.SELF_STOP
    return Step.END_FOR_REASON if f.overdue or f.unhealthy or f.pressured else Step.WAIT


def _backoff(f: Facts) -> Step:
    if f.pending.stop or f.leaving.removing:
        return Step.CANCEL_RESTART
    if f.leaving is Leaving.DETACHED:
        return Step.LEAVE_BACKOFF
    return Step.RESTART if f.pending.start or f.backoff_over else Step.WAIT
