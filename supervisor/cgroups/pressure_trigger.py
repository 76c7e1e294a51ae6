"""PSI triggers: the kernel wakes the loop when a cgroup's pressure crosses a threshold.

A trigger is a line `some|full STALL_US WINDOW_US` written to a cgroup v2 `<resource>.pressure`
file (Documentation/accounting/psi.rst): the kernel then signals the open file with EPOLLPRI
whenever the tasks were stalled more than STALL_US within a sliding WINDOW_US, at most once per
window, and removes the trigger when the fd is closed. asyncio's `add_reader` watches only
EPOLLIN, so the fd goes into an epoll set of its own, registered for EPOLLPRI, and the loop
watches that set's fd (readable while an event is pending). Polling the file consumes the
event, so nothing spins. No thread, no timer: a quiet unit costs nothing.

A trigger is only a wake-up. Whoever holds it confirms the condition by reading the averages
(`read_average`): the kernel's window is a sliding sum, the limit a decaying average.
"""

from __future__ import annotations

import asyncio
import os
import select
from collections.abc import Callable

from supervisor.cgroups import pressure
from supervisor.errors import CgroupError

# The kernel's limits for a trigger's window (kernel/sched/psi.c): 500 ms to 10 s.
WINDOW_MIN_US, WINDOW_MAX_US = 500_000, 10_000_000
# Unprivileged writers may only use multiples of 2 s; 2 s is also the period in which the
# kernel updates its averages, so a limit on an average is crossed only after some 2 s window
# was above it: a 2 s trigger at the same percentage wakes no later than the average crosses.
WINDOW_US = 2_000_000


def trigger_line(kind: str, threshold: float, window_us: int = WINDOW_US) -> str:
    """The text to write for `kind` stalled more than `threshold` % of `window_us`."""
    if not WINDOW_MIN_US <= window_us <= WINDOW_MAX_US:
        raise ValueError(f"a PSI trigger window is 500ms to 10s, got {window_us}us")
    # The kernel refuses a zero stall: "> 0 %" wakes on the first microsecond.
    stall_us = max(1, min(window_us, int(window_us * threshold / 100)))
    return f"{kind} {stall_us} {window_us}"


class PressureTrigger:
    """One PSI trigger on `path`, calling `callback` on the loop at each kernel event.

    Holds two fds (the pressure file, the epoll set) until `close()`. When the cgroup is
    removed the kernel reports an error on the fd; the trigger then stops watching by itself.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        path: str,
        line: str,
        callback: Callable[[], None],
    ) -> None:
        self.path = path
        self._loop, self._callback = loop, callback
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise CgroupError(f"cannot open {path} for a PSI trigger: {exc.strerror}") from exc
        try:
            # The kernel overwrites the last byte written with a NUL: send one of our own.
            os.write(self._fd, line.encode() + b"\0")
            self._epoll = select.epoll(1, select.EPOLL_CLOEXEC)
        except OSError as exc:
            os.close(self._fd)
            raise CgroupError(f"PSI trigger {line!r} on {path} refused: {exc.strerror}") from exc
        try:
            self._epoll.register(self._fd, select.EPOLLPRI)
            loop.add_reader(self._epoll.fileno(), self._on_ready)
        except BaseException:
            self._epoll.close()
            os.close(self._fd)
            raise
        self._closed = False

    def _on_ready(self) -> None:
        try:
            events = self._epoll.poll(0)
        except OSError:
            events = []
        gone = any(mask & (select.EPOLLERR | select.EPOLLHUP) for _, mask in events)
        if gone:  # the cgroup was removed under the trigger
            self._stop_watching()
            return
        # No EPOLLPRI test: the loop's own epoll asked this set whether it was ready, which
        # polled the pressure file, and polling it consumes the kernel's event. The set was
        # ready, so there was one; a spurious wake-up would only cost a read of the average.
        self._callback()

    def _stop_watching(self) -> None:
        if not self._closed:
            self._loop.remove_reader(self._epoll.fileno())

    def close(self) -> None:
        if self._closed:
            return
        self._stop_watching()
        self._closed = True
        self._epoll.close()
        os.close(self._fd)


def read_average(path: str, kind: str, window: str) -> float | None:
    """The `kind` `window` average (percent) of a pressure file; None where the kernel has
    none (no PSI, or no `full` line: cpu before Linux 5.13)."""
    psi = pressure.read_psi(path)
    if psi is None or kind not in psi:
        return None
    return psi[kind].get(window)
