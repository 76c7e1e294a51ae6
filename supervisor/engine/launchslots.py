"""How many launches are in flight at once: a FIFO of slots, held from a run's cgroup to its exec.

A launch spends most of its time waiting: for the launcher to join the cgroup, unshare and
fork PID 1, then for PID 1 to build its root and exec. Those waits are awaited on the loop
(sandbox/host/launch.py), so while one launch waits the loop plans the next, creates its cgroup
and answers the API. Without a bound, a daemon starting 1000 units would begin all 1000 at
once: 1000 cgroups and launchers before the first exec, each holding its pipes (the fd
headroom, engine/run.py), and every sandbox slowed by all the others. With a bound of about two
per CPU, the children keep every CPU busy building roots while the loop prepares the next
launch, and a storm finishes in the order it was asked for (a unit started early execs early).

A freed slot is handed on by a timer of no delay, not at once: asyncio runs timers after the
I/O its next poll found, so an API request waiting on its socket is read (and its handler
queued) before the next launch's first step, which plans the launch and makes its cgroup in
one go (milliseconds). And one slot is handed on per loop turn: several launches that end in
the same turn do not start their successors back to back in front of a `status` (issue 23:
the list view must not starve while starts queue). A slot taken with nobody waiting is taken
at once.

    slots = LaunchSlots(default_limit(os.cpu_count()))
    async with slots.held():
        ...  # one launch

Pure logic on asyncio futures (no clock, no kernel): tests/unit/engine/test_launchslots.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable

PER_CPU = 2  # one launch's children on the CPU while the loop plans the next
MOST = 32  # beyond this a launch only waits longer, with more fds held


def default_limit(cpus: int | None) -> int:
    """The bound for a machine with `cpus` CPUs (None: unknown, as one)."""
    return max(2, min(MOST, PER_CPU * (cpus or 1)))


class LaunchSlots:
    """At most `limit` holders at once; the others wait in the order they asked."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"launch slots: limit must be at least 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self.peak = 0  # the most held at once so far
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._granting: asyncio.TimerHandle | None = None  # the next hand-on, if due
        # Told when the last held slot is given back and nobody waits: a storm of launches
        # is over (the daemon freezes its survivors out of the collector then, gcpolicy.py).
        self.idle_observers: list[Callable[[], None]] = []

    @property
    def waiting(self) -> int:
        return sum(not w.done() for w in self._waiters)

    async def acquire(self) -> None:
        """Take a slot, waiting behind everyone who asked before (FIFO)."""
        if self.in_flight < self.limit and not self._waiters:
            self._take()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Granted and cancelled in the same moment: the slot goes to the next in line.
                self.release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back; the longest waiter gets it, after the loop's next poll (see the
        module docstring)."""
        if self.in_flight <= 0:
            raise RuntimeError("launch slots: release() without a held slot")
        self.in_flight -= 1
        self._hand_on_later()
        if self.in_flight == 0 and not self._waiters:
            for observe in self.idle_observers:
                observe()

    def _hand_on_later(self) -> None:
        if self._granting is not None or not self._waiters or self.in_flight >= self.limit:
            return
        # Every waiter is a future of the loop the slots are used on (acquire).
        loop = self._waiters[0].get_loop()
        self._granting = loop.call_later(0, self._hand_on)

    def _hand_on(self) -> None:
        """One free slot to the longest waiter that still waits; the next one a turn later."""
        self._granting = None
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter is skipped
                self._take()
                waiter.set_result(None)
                break
        self._hand_on_later()

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def _take(self) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
