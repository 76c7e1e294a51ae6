"""What a unit's runner holds stays bounded and small (issue 23: 5000 units under one daemon)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from engine_fakes import Rig, finish, make_spec, run, until

from supervisor.contract import State
from supervisor.engine.backoff import Backoff
from supervisor.engine.runner_base import RECENT_EVENTS, RECENT_EXITS, keep_last
from supervisor.engine.store import UnitRecord
from supervisor.engine.unit_runner import UnitRunner
from supervisor.unit.schema import Restart


def test_keep_last_drops_the_oldest() -> None:
    items: list[int] = []
    for i in range(25):
        keep_last(items, i, 10)
    assert items == list(range(15, 25))


def test_a_runner_keeps_the_latest_exits_and_events_only(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        spec = make_spec(script="exit 3", restart={"delay": "0s", "burst": 20})
        r = rig.runner(spec)
        assert not hasattr(r, "__dict__")  # slots: a new attribute is named in __slots__
        # A previous daemon's record with more exits than status shows keeps the latest.
        r.resume(UnitRecord(unit="svc", state="stopped", recent_exits=[str(i) for i in range(15)]))
        assert r.recent_exits == [str(i) for i in range(5, 15)]
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.FAILED)
        assert r.launches == 20
        assert r.recent_exits == ["exit-code:3"] * RECENT_EXITS
        assert len(r.recent_events) == RECENT_EVENTS
        assert r.recent_events[-1].event == "failed"  # newest last
        # Kept per unit for its life: slots, no __dict__ each (a new field is a slot as is).
        assert not hasattr(r.recent_events[-1], "__dict__")
        assert not hasattr(r.record(), "__dict__")
        await finish(r, task)

    run(main, tmp_path)


def test_backoff_forgets_starts_outside_its_window() -> None:
    now = [100.0]
    backoff = Backoff(Restart(burst=3, interval=10.0), lambda: now[0])
    for t in (100.0, 101.0, 102.0, 103.0, 104.0):
        now[0] = t
        backoff.record_start()
    assert backoff.starts == [102.0, 103.0, 104.0]  # at most `burst` can decide anything
    now[0] = 112.5
    backoff.record_start()
    assert backoff.starts == [103.0, 104.0, 112.5]
    now[0] = time.monotonic()
    backoff.reset()
    assert backoff.starts == []


def test_a_runners_task_has_its_unit_bound_and_its_creator_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []
    real_step = UnitRunner._step

    async def step(self: UnitRunner) -> bool:  # what any line the task logs carries
        seen.append(structlog.contextvars.get_contextvars())
        return await real_step(self)

    monkeypatch.setattr(UnitRunner, "_step", step)

    async def main(rig: Rig) -> None:
        r = rig.runner(make_spec(script="sleep 100"))
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.RUNNING)
        assert "unit" not in structlog.contextvars.get_contextvars()
        await finish(r, task)
        assert "unit" not in structlog.contextvars.get_contextvars()

    run(main, tmp_path)
    assert seen and all(ctx.get("unit") == "svc" for ctx in seen)
