"""The event stream's memory: numbered unit events, the last RING_SIZE of them kept for replay.

Every event the engine publishes has a sequence number `seq` (1, 2, 3, ... for the life of
one daemon; `epoch` tells daemons apart, since a new one counts from 1 again). The engine
numbers them as it publishes them (events of a controller that does not are numbered here), so
a reload's answer can name the seq its consequences follow. A client asks
for what it missed with `since=SEQ` (the kept events after SEQ) or for recent history with
`replay=N` (the last N), then gets the live events. There is no gap and no repeat between the
two: the backlog is copied and the live subscription made in one synchronous step.

The engine publishes events from the daemon's start, but the API comes up after the start-up
(re-adoption and the first reconcile), so the memory starts with the units' own recent events
(`UnitStatus.recent_events`), oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any

from supervisor.engine.model import Controller, UnitEvent

RING_SIZE = 1000
# Per client. A client that reads slower than events come loses the oldest of its queue; the
# gap shows in `seq`, and `since` fetches what is still kept.
QUEUE_SIZE = 1000


@dataclass(frozen=True)
class Numbered:
    seq: int
    event: UnitEvent

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, **self.event.to_json()}


class Subscription:
    """One client's view: `backlog` first, then `next()` for live events (of `unit` only, if
    given); `close()` when done."""

    def __init__(self, log: EventLog, unit: str | None, backlog: list[Numbered]) -> None:
        self._log, self.unit, self.backlog = log, unit, backlog
        self._queue: asyncio.Queue[Numbered] = asyncio.Queue(QUEUE_SIZE)

    def offer(self, numbered: Numbered) -> None:
        if self.unit is not None and numbered.event.unit != self.unit:
            return
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
        self._queue.put_nowait(numbered)

    async def next(self) -> Numbered:
        return await self._queue.get()

    def close(self) -> None:
        self._log.unsubscribe(self)


class EventLog:
    def __init__(self, size: int = RING_SIZE) -> None:
        self.epoch = secrets.token_hex(8)
        self._ring: deque[Numbered] = deque(maxlen=size)
        self._seq = 0
        self._subscriptions: set[Subscription] = set()

    @property
    def newest(self) -> int:
        """The seq of the newest event so far (0: none yet)."""
        return self._seq

    def add(self, event: UnitEvent) -> None:
        # The engine's number (a reload's answer names a seq to follow from); never a step
        # back, whatever a controller that numbers only some of its events says.
        self._seq = max(self._seq + 1, event.seq)
        numbered = Numbered(self._seq, event)
        self._ring.append(numbered)
        for subscription in self._subscriptions:
            subscription.offer(numbered)

    def subscribe(
        self, unit: str | None = None, since: int | None = None, replay: int | None = None
    ) -> Subscription:
        """Live events from now on, after a backlog: the kept events after `since`, or the
        last `replay`, or none. A `since` beyond the newest seq comes from an earlier daemon
        (seq counts from 1 again): the backlog is then everything kept."""
        kept = [n for n in self._ring if unit is None or n.event.unit == unit]
        if since is not None:
            backlog = kept if since > self._seq else [n for n in kept if n.seq > since]
        elif replay is not None:
            backlog = kept[len(kept) - replay :] if replay else []
        else:
            backlog = []
        subscription = Subscription(self, unit, backlog)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    async def feed(self, controller: Controller) -> None:
        """Number and keep every event of `controller`, seeded with the units' recent events;
        runs until cancelled."""
        stream = controller.events()
        try:
            seed = [e for unit in controller.list_units(detail=True) for e in unit.recent_events]
            for event in sorted(seed, key=lambda e: (e.seq, e.at)):
                self.add(event)
            # The stream subscribes when it is first iterated, which runs without yielding to
            # the loop after the snapshot above: no event can fall between the two.
            async for event in stream:
                self.add(event)
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()
