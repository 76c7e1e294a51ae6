"""Wakeup: deadlines on the injected clock, and `idle` as the settled hook tests wait on."""

from __future__ import annotations

import asyncio

from engine_fakes import ManualClock

from supervisor.engine.wakeup import Wakeup


def test_a_deadline_passes_on_the_clock_not_on_the_wall() -> None:
    async def main() -> None:
        clock = ManualClock()
        wake = Wakeup(clock)
        waiter = asyncio.create_task(wake.sleep_until(lambda: False, 0.05))
        for _ in range(5):  # three times the timeout of real time: the clock stood still
            await asyncio.sleep(0.05)
            assert not waiter.done()
        clock.advance(0.05)
        assert await asyncio.wait_for(waiter, 60) is False

    asyncio.run(main())


def test_idle_means_asleep_with_nothing_pending() -> None:
    async def main() -> None:
        wake = Wakeup(ManualClock())
        assert not wake.idle  # not waiting yet
        seen: list[bool] = []

        async def task() -> None:
            while await wake.sleep():
                seen.append(True)

        runner = asyncio.create_task(task())
        await asyncio.sleep(0)
        assert wake.idle
        wake.set()
        assert not wake.idle  # a wake-up is pending
        while not wake.idle:
            await asyncio.sleep(0)
        assert seen == [True]
        runner.cancel()

    asyncio.run(main())


def test_a_wake_up_is_level_triggered_and_kept_until_slept_through() -> None:
    async def main() -> None:
        wake = Wakeup(ManualClock())
        wake.set()
        wake.set()  # two before a sleep are one wake-up, not lost and not two
        assert await wake.sleep(0) is True  # already set: no wait, whatever the timeout
        assert await wake.sleep(0) is False  # slept through: the timeout, nothing pending
        sleeper = asyncio.create_task(wake.sleep())
        await asyncio.sleep(0)
        assert wake.idle and not sleeper.done()
        wake.set()
        assert await asyncio.wait_for(sleeper, 60) is True
        cancelled = asyncio.create_task(wake.sleep())
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        assert not wake.idle  # a cancelled sleep leaves nothing behind
        wake.set()
        assert await wake.sleep() is True

    asyncio.run(main())
