"""The OOM watch's counter logic on a plain pipe standing in for inotify/eventfd (no root)."""

from __future__ import annotations

import asyncio
import os

from supervisor.cgroups.base import OomEvent
from supervisor.cgroups.oom import CounterWatch


async def _run(bump_after: float | None) -> list[OomEvent]:
    loop = asyncio.get_running_loop()
    counter = [2]
    events: list[OomEvent] = []
    r, w = os.pipe()
    os.set_blocking(r, False)
    watch = CounterWatch(loop, "web", [r], lambda: counter[0], events.append)
    try:
        os.write(w, b"x")  # the wakeup, e.g. v1's "under OOM" before the kill
        if bump_after is not None:
            loop.call_later(bump_after, lambda: counter.__setitem__(0, 3))
        await asyncio.sleep(0.3)
    finally:
        watch.close()
        watch.close()  # idempotent
        os.close(w)
    return events


def test_a_kill_counted_after_the_wakeup_is_still_reported() -> None:
    assert asyncio.run(_run(bump_after=0.015)) == [OomEvent("web", 3)]


def test_a_wakeup_without_a_kill_reports_nothing() -> None:
    assert asyncio.run(_run(bump_after=None)) == []
