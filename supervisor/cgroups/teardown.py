"""Killing everything in a cgroup, shared by both backends.

Signalling the pids one by one races with fork: a process forked after the list was read
survives. Freezing the cgroup first closes that race (a frozen task cannot fork), so the list
read while frozen is complete; SIGKILL is then delivered, the cgroup thawed so the tasks can
die, and the whole round repeats until the cgroup is empty. Because membership is by cgroup,
not process group or session, this also catches double-forked daemons and `setsid` escapees.
Follows crun `cgroup_killall_path` and runc `signalAllProcesses`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

from supervisor.errors import CgroupError

KILL_TIMEOUT = 5.0
FREEZE_TIMEOUT = 0.5


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll `predicate` with a short, growing interval; True as soon as it holds.

    Blocking, but bounded: the cgroup operations that wait (freeze, kill, rmdir) complete in
    milliseconds once the kernel has delivered the signals.
    """
    deadline = time.monotonic() + timeout
    interval = 0.001
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
        interval = min(interval * 2, 0.02)


def sigkill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.kill(pid, signal.SIGKILL)


def freeze_and_kill(
    where: str,
    pids: Callable[[], list[int]],
    freeze: Callable[[], None],
    thaw: Callable[[], None],
    timeout: float = KILL_TIMEOUT,
) -> None:
    """Freeze, SIGKILL every pid, thaw; repeat until `pids()` is empty."""
    deadline = time.monotonic() + timeout
    while pids():
        if time.monotonic() >= deadline:
            raise CgroupError(f"{where}: processes still alive after SIGKILL: {pids()}")
        freeze()
        try:
            sigkill(pids())
        finally:
            thaw()
        wait_until(lambda: not pids(), 0.1)
