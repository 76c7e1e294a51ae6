"""The OOM watch's counter logic on a plain pipe standing in for inotify/eventfd, and the v2
watch's inotify wakeup on a plain file standing in for memory.events (no root).

The counter is a script of readings, not a timer race: the watch reads it at construction, at
the wakeup and at each recheck, so the tests say exactly which reading shows the kill."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.cgroups.base import OomEvent
from supervisor.cgroups.oom import RECHECK_DELAYS, CounterWatch, watch_memory_events
from supervisor.errors import CgroupError


async def _run(readings: Iterator[int]) -> tuple[list[OomEvent], int]:
    """Events reported after one wakeup, and how many times the counter was read."""
    loop = asyncio.get_running_loop()
    events: list[OomEvent] = []
    reads = 0
    last = 0

    def counter() -> int:
        nonlocal reads, last
        reads += 1
        last = next(readings, last)
        return last

    r, w = os.pipe()
    os.set_blocking(r, False)
    watch = CounterWatch(loop, "web", [r], counter, events.append)
    try:
        os.write(w, b"x")  # the wakeup, e.g. v1's "under OOM" before the kill
        async with asyncio.timeout(60):
            while reads < 2:  # the wakeup's own look
                await asyncio.sleep(0.001)
        # Timers run in deadline order, so every recheck (all scheduled at the wakeup, the
        # latest max(RECHECK_DELAYS) after it) has run before this sleep ends.
        await asyncio.sleep(max(RECHECK_DELAYS) + 0.01)
    finally:
        watch.close()
        watch.close()  # idempotent
        os.close(w)
    return events, reads


def test_a_kill_counted_after_the_wakeup_is_still_reported() -> None:
    # Construction 2, the wakeup still 2 (the kernel counts the kill a moment later), then 3.
    events, reads = asyncio.run(_run(iter([2, 2, 2, 3])))
    assert events == [OomEvent("web", 3)]
    assert reads == 4  # reported at the second recheck; the rest were cancelled


def test_a_wakeup_without_a_kill_reports_nothing() -> None:
    events, reads = asyncio.run(_run(iter([2])))
    assert events == []
    assert reads == 2 + len(RECHECK_DELAYS)  # every recheck looked


def test_a_v2_watch_is_woken_by_inotify_when_memory_events_is_written(tmp_path: Path) -> None:
    # A plain file stands in for the cgroup's memory.events: a write to it is the IN_MODIFY
    # the kernel's cgroup_file_notify makes (linux/inotify.py's calls, no root needed).
    events_path = tmp_path / "memory.events"
    events_path.write_text("oom 0\noom_kill 0\n")

    async def main() -> list[OomEvent]:
        seen: list[OomEvent] = []
        watch = watch_memory_events(asyncio.get_running_loop(), "web", str(events_path),
                                    seen.append)  # fmt: skip
        try:
            events_path.write_text("oom 1\noom_kill 1\n")
            async with asyncio.timeout(60):
                while not seen:
                    await asyncio.sleep(0.001)
        finally:
            watch.close()
        return seen

    assert asyncio.run(main()) == [OomEvent("web", 1)]


def test_a_v2_watch_on_a_missing_file_names_the_call_and_the_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "gone" / "memory.events")
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(CgroupError, match=f"inotify_add_watch on {missing} failed: No such"):
            watch_memory_events(loop, "web", missing, lambda _: None)
    finally:
        loop.close()
