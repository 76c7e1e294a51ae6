"""The names other programs rely on, declared once: unit states, health values, exit reasons.

Status (table and JSON), events, metrics, the OpenAPI document and the CLI all take these
from here, and tests/unit/test_contract.py fails if a copy (the README's tables, the OpenAPI
enums, the metric labels) drifts. Keys may be added to the contract, never renamed or removed.
CLI exit codes are in errors.py, next to the errors that carry them; API error codes in
api/errors.py; event names are listed in docs/control.md (checked against the engine).
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


class HealthState(enum.StrEnum):
    """The verdict of a unit's `[health]` probes (null in status without `[health]`)."""

    STARTING = "starting"  # no success yet
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # `retries` failures in a row: the run is ended


class ExitReason(enum.StrEnum):
    """How a run ended, where the spelling is fixed (`last_exit`, LAST-EXIT, events).

    The others follow a pattern: `exit-code:N`, `signal:NAME` (engine/exits.py) and
    `launch-error:<stage>: <message>` (errors.LaunchError).
    """

    OOM_KILLED = "oom-killed"  # SIGKILLed with the cgroup's OOM counter moved during the run
    LOST = "lost"  # ended while no daemon watched it: status unknown
    UNHEALTHY = "unhealthy"  # ended by the daemon: [health] failed `retries` times
    WATCHDOG = "watchdog"  # ended by the daemon: no WATCHDOG=1 in time
    START_TIMEOUT = "start-timeout"  # ended by the daemon: not ready within start_timeout
    # Ended by the daemon: `[oom] pressure_limit` held for `pressure_duration` (before the
    # OOM killer would act), one reason per resource the limit is on.
    MEMORY_PRESSURE = "memory-pressure"
    CPU_PRESSURE = "cpu-pressure"
    IO_PRESSURE = "io-pressure"


EXIT_CODE = "exit-code:"
SIGNAL = "signal:"
LAUNCH_ERROR = "launch-error:"
# The launch-error stage of a launch that ran out of a host resource (file descriptors:
# `launch-error:resources: too many open files ...`). Unlike every other stage it says nothing
# about the unit, and it passes, so it goes through `[restart]` like a crash (backoff) instead
# of failing the unit for good.
LAUNCH_RESOURCES = "resources"


# Where a service's output goes: the daemon config's `output` and a unit's `[service] output`.
# `file`: <log_dir>/<unit>.log, what `sandboxctl logs` reads; `journal`: journald, one entry
# per line; `both`: each line to both.
OUTPUTS: tuple[Output, ...] = ("file", "journal", "both")
# The type `Output` (a Literal of OUTPUTS) is made on first use, not at import: sandboxctl
# imports this module and must not import typing (cli/__init__.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    Output = Literal["file", "journal", "both"]


def __getattr__(name: str) -> object:
    if name == "Output":
        from typing import Literal  # noqa: PLC0415

        return Literal[OUTPUTS]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
