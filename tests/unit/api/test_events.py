"""The event log's start: seeded with the units' recent events, then numbered live ones."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

from supervisor.api.events import EventLog
from supervisor.api.testing import EPOCH, FakeController, make_status
from supervisor.engine.model import UnitEvent


def _event(unit: str, name: str, seconds: int) -> UnitEvent:
    return UnitEvent(unit, name, EPOCH + dt.timedelta(seconds=seconds), "running")


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)


def _last(log: EventLog) -> str:
    subscription = log.subscribe(replay=1)
    subscription.close()
    return subscription.backlog[-1].event.event


def test_feed_starts_with_recent_events_oldest_first_then_live() -> None:
    async def main() -> None:
        controller = FakeController([
            make_status("web", recent_events=[_event("web", "started", 2)]),
            make_status("db", recent_events=[_event("db", "started", 1)]),
        ])  # fmt: skip
        log = EventLog()
        feed = asyncio.create_task(log.feed(controller))
        try:
            await asyncio.wait_for(_until(lambda: controller.subscribers == 1), 5)
            controller.publish(_event("web", "exited", 3))
            await asyncio.wait_for(_until(lambda: log.newest > 0 and _last(log) == "exited"), 5)
            kept = log.subscribe(replay=10).backlog
            assert [(n.seq, n.event.unit, n.event.event) for n in kept] == [
                (1, "db", "started"),
                (2, "web", "started"),
                (3, "web", "exited"),
            ]
        finally:
            feed.cancel()

    asyncio.run(main())
