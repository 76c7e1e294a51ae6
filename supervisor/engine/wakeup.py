"""The one primitive a unit task waits on: "something happened" (a command or a kernel event),
with an optional timeout. Level-triggered: the task re-reads its state after every wake-up, so a
wake-up that arrives while the task is busy is never lost.

Deadlines are kept on the host's monotonic clock (`Host.monotonic`), the same clock the task
decides by; the timeout is only how long to sleep before looking again. A test that freezes that
clock therefore decides when a deadline passes, however slowly the machine runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Wakeup:
    # One a unit. No asyncio.Event: its waiter deque is ~600 bytes from the start, 3 MB at
    # 5000 units for a flag and at most one waiter (issue 23: the daemon's heap per unit).
    __slots__ = ("_clock", "_pending", "_sleeping", "_waiter")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pending = False  # set, not slept through yet
        self._sleeping = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._pending = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def idle(self) -> bool:
        """Asleep with no wake-up pending: the task has acted on everything it was told."""
        return self._sleeping and not self._pending

    async def sleep(self, timeout: float | None = None) -> bool:
        """Wait for a wake-up (True) or the timeout (False)."""
        self._sleeping = True
        try:
            if not self._pending:  # else a wake-up came meanwhile: no wait at all
                waiter = self._waiter = asyncio.get_running_loop().create_future()
                if timeout is None:
                    await waiter
                else:
                    async with asyncio.timeout(timeout):
                        await waiter
        except TimeoutError:
            return False
        finally:
            self._sleeping = False
            self._pending = False
            self._waiter = None
        return True

    async def sleep_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wake-ups until `done()` (True) or the timeout on the clock (False)."""
        deadline = self._clock() + timeout
        while not done():
            left = deadline - self._clock()
            if left <= 0:
                return False
            await self.sleep(left)
        return True
