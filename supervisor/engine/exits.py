"""Exit reasons: what a wait status (and the cgroup's OOM counter) means to an operator.

The reasons are part of the contract (supervisor/contract.py): `exit-code:N`, `signal:NAME`,
`oom-killed`, `lost` (the status is unknown), plus the ones the runner gives when it ended the
run itself (`unhealthy`, `watchdog`, `start-timeout`).
"""

from __future__ import annotations

import os
import signal

from supervisor.contract import EXIT_CODE, SIGNAL, ExitReason


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def describe_status(status: int) -> str:
    """`exit-code:N` or `signal:NAME` for a wait status."""
    if os.WIFSIGNALED(status):
        return f"{SIGNAL}{signal_name(os.WTERMSIG(status))}"
    return f"{EXIT_CODE}{os.waitstatus_to_exitcode(status)}"


def exit_reason(status: int | None, oom_kills_during_run: int) -> str:
    """The exit reason of a run from its wait status.

    The wait status alone cannot tell the OOM killer from an operator, so the cgroup's OOM
    counter is read at launch and at exit: a SIGKILL with the counter moved during the run is
    `oom-killed`; a SIGKILL without (an operator's kill -9) stays `signal:SIGKILL`. An unknown
    status is `lost`.
    """
    if status is None:
        return (ExitReason.OOM_KILLED if oom_kills_during_run else ExitReason.LOST).value
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL and oom_kills_during_run:
        return ExitReason.OOM_KILLED.value
    return describe_status(status)
