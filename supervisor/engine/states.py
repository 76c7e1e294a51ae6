"""Why the runner ends a run, and what an ending run is for: the runner's own vocabulary.

The unit states themselves are part of the contract (supervisor/contract.py).
"""

from __future__ import annotations

import enum

from supervisor.contract import ExitReason


class StopReason(enum.Enum):
    """Why the daemon itself ends a run; all but SELF_STOP are also the run's exit reason."""

    WATCHDOG = ExitReason.WATCHDOG.value
    UNHEALTHY = ExitReason.UNHEALTHY.value
    OOM_KILLED = ExitReason.OOM_KILLED.value  # oom.policy says the run must not go on
    START_TIMEOUT = ExitReason.START_TIMEOUT.value
    # [oom] pressure_limit held for pressure_duration (action "restart" or "stop")
    MEMORY_PRESSURE = ExitReason.MEMORY_PRESSURE.value
    CPU_PRESSURE = ExitReason.CPU_PRESSURE.value
    IO_PRESSURE = ExitReason.IO_PRESSURE.value
    # The service said STOPPING=1: it ends itself (no stop_signal), and how it exits is what
    # the restart policy judges.
    SELF_STOP = "self-stop"


class Intent(enum.Enum):
    """What an operator (or a reload) asked of an ending run."""

    RESTART = "restart"  # start again after the stop (`restart`, a changed file)
    STOP = "stop"  # `stop`, or the unit's removal


def intent_from(value: str | None) -> Intent | StopReason | None:
    """The state file's `intent` (an Intent or a StopReason value) back; None if unknown."""
    for kind in (Intent, StopReason):
        try:
            return kind(value)
        except ValueError:
            pass
    return None
