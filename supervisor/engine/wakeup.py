"""The one primitive a unit task waits on: "something happened" (a command or a kernel event),
with an optional timeout. Level-triggered: the task re-reads its state after every wake-up, so a
wake-up that arrives while the task is busy is never lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Wakeup:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def sleep(self, timeout: float | None = None) -> bool:
        """Wait for a wake-up (True) or the timeout (False)."""
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        finally:
            self._event.clear()
        return True

    async def sleep_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wake-ups until `done()` (True) or the timeout (False)."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await self.sleep(left)
        return True
