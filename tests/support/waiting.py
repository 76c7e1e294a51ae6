"""Waiting for a condition: the only polling loop the tests have.

Tests wait for a state to be reached, never for time to pass: a deadline is how long a slow or
loaded machine may take, not a guess of how long it does take. The default deadline is
generous because a CI run shares two cores with a VM; a condition that holds returns at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

TIMEOUT = 60.0
INTERVAL = 0.02


def poll(
    predicate: Callable[[], bool], timeout: float = TIMEOUT, interval: float = INTERVAL
) -> bool:
    """True once predicate() holds, False at the deadline (for checks that report details)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def wait_for(
    predicate: Callable[[], bool],
    timeout: float = TIMEOUT,
    what: Callable[[], str] | None = None,
    interval: float = INTERVAL,
) -> None:
    """Return once predicate() holds; fail the test at the deadline, saying `what()` if given."""
    if not poll(predicate, timeout, interval):
        raise AssertionError(f"timed out after {timeout}s" + (f": {what()}" if what else ""))
