"""Waiting until threads have exited, woken by the kernel: one pidfd per thread, polled.

Used after a cgroup's rmdir said EBUSY (cgroups/files.rmdir): its tasks were killed but are
still on their way out, and a thread leaves its cgroups in the kernel's exit path before it
is marked exited, which is when its pidfd becomes readable. So once every pidfd has read, the
cgroup no longer counts them, without a sleep-and-retry guessing how long that takes.
"""

from __future__ import annotations

import errno
import math
import os
import select
import time
from collections.abc import Iterable

# <linux/pidfd.h>, Linux 6.9: a pidfd of the thread itself, readable once that thread exits.
PIDFD_THREAD = os.O_EXCL


def wait_gone(tids: Iterable[int], timeout: float) -> bool:
    """Block until every thread of `tids` has exited, at most `timeout` seconds; True if they
    all did (a tid that no longer exists has). Only for waits the kernel bounds: killed tasks."""
    fds: list[int] = []
    try:
        for tid in tids:
            fd = _open(tid)
            if fd is not None:
                fds.append(fd)
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        pending = len(fds)
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for fd, _ in poller.poll(math.ceil(left * 1000)):
                poller.unregister(fd)
                pending -= 1
        return True
    finally:
        for fd in fds:
            os.close(fd)


def _open(tid: int) -> int | None:
    """A pidfd that reads once thread `tid` has exited; None if it is gone already."""
    try:
        return os.pidfd_open(tid, PIDFD_THREAD)
    except ProcessLookupError:
        return None
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
    # Before Linux 6.9 (no PIDFD_THREAD): its process's, which reads once all its threads
    # have exited; a killed process's threads all go.
    tgid = _tgid(tid)
    if tgid is None:
        return None
    try:
        return os.pidfd_open(tgid)
    except ProcessLookupError:
        return None


def _tgid(tid: int) -> int | None:
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None
