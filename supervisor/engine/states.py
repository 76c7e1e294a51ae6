"""The contract's unit states (DESIGN.md part 1) and what each one allows.

The runner moves between these and nothing else; the predicates keep "may I start/stop this
unit now?" in one place instead of scattered membership tests.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    STARTING = "starting"  # launching; not yet running (or not yet ready)
    RUNNING = "running"
    STOPPING = "stopping"  # stop_signal sent (or STOPPING=1 said), waiting for the exit
    STOPPED = "stopped"  # stopped on purpose (sandboxctl stop, removed, daemon exit)
    EXITED = "exited"  # ended by itself and no restart is due
    BACKOFF = "backoff"  # waiting for a restart delay
    FAILED = "failed"  # start limit hit or launch error; needs `sandboxctl start`
    INVALID = "invalid"  # the file does not validate and no earlier version runs

    def has_process(self) -> bool:
        """A sandbox (cgroup, PID 1) exists in this state."""
        return self in (State.STARTING, State.RUNNING, State.STOPPING)

    def can_start(self) -> bool:
        """`start` would launch a new run (a running unit is already started)."""
        return self in (State.STOPPED, State.EXITED, State.BACKOFF, State.FAILED)

    def can_stop(self) -> bool:
        """`stop` has something to do: a process to end or a pending restart to cancel."""
        return self in (State.STARTING, State.RUNNING, State.BACKOFF)

    def is_settled(self) -> bool:
        """No transition happens without a command: the runner is idle."""
        return self in (State.STOPPED, State.EXITED, State.FAILED, State.INVALID)
