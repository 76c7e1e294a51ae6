"""`[oom] pressure_limit`: the hysteresis (pure, on a fake clock) and the runner's actions on
a fake cgroup whose pressure the test sets (engine/pressure.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from supervisor.contract import State
from supervisor.engine.pressure import Change, Hysteresis
from tests.unit.engine.engine_fakes import (
    ManualClock,
    Rig,
    advance,
    finish,
    make_spec,
    run,
    settled,
    until,
)

KEY = ("memory", "full", "avg10")


def test_hysteresis_acts_only_after_the_whole_duration() -> None:
    h = Hysteresis(10.0)
    assert h.observe(False, 0.0) is None and not h.armed
    assert h.observe(True, 1.0) is Change.HIGH and h.armed
    assert h.observe(True, 5.0) is None
    assert h.remaining(5.0) == 6.0
    assert h.observe(True, 10.9) is None
    assert h.observe(True, 11.0) is Change.ACT
    # Acting re-arms: the next action needs another whole duration.
    assert h.observe(True, 12.0) is None
    assert h.observe(True, 21.0) is Change.ACT


def test_hysteresis_a_drop_disarms_and_starts_over() -> None:
    h = Hysteresis(10.0)
    assert h.observe(True, 0.0) is Change.HIGH
    assert h.observe(False, 9.0) is Change.LOW and not h.armed
    assert h.observe(False, 9.5) is None
    assert h.observe(True, 10.0) is Change.HIGH
    assert h.observe(True, 19.0) is None  # 19 s after the first rise, 9 after this one
    assert h.observe(True, 20.0) is Change.ACT


def test_hysteresis_zero_duration_acts_at_once() -> None:
    assert Hysteresis(0.0).observe(True, 0.0) is Change.ACT


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def _pressured_spec(action: str, script: str = "sleep 100", **sections: Any) -> Any:
    oom = {"pressure_limit": "memory.full.avg10 > 40", "pressure_duration": "10s",
           "pressure_action": action}  # fmt: skip
    return make_spec(script=script, oom=oom, **sections)


def test_restart_ends_the_run_with_memory_pressure(tmp_path: Path) -> None:
    clock = ManualClock()

    async def main(rig: Rig) -> None:
        r = rig.runner(_pressured_spec("restart", restart={"delay": "1s"}))
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.RUNNING)
        cg = rig.manager.cgroups["svc"]
        assert cg.trigger_args == [("memory", "full", 40.0)]
        cg.pressure(*KEY, 55.0)
        await settled(r)
        assert r.state is State.RUNNING  # seen, not yet held for the duration
        await advance(clock, r, 5)
        cg.pressure(*KEY, 60.0)
        await settled(r)
        assert r.state is State.RUNNING
        clock.advance(5)
        cg.pressure(*KEY, 60.0)  # the kernel's next wake-up (or the re-check timer)
        await until(r, lambda: r.state is State.BACKOFF)
        assert r.last_exit == "memory-pressure"
        assert not cg.triggers  # the trigger went with the run
        await advance(clock, r, 1)
        await until(r, lambda: r.state is State.RUNNING)
        assert r.restarts == 1 and len(rig.manager.cgroups["svc"].triggers) == 1
        await finish(r, task)

    with capture_logs() as logs:
        run(main, tmp_path, clock)
    assert [e["value"] for e in _events(logs, "unit.pressure_high")] == [55.0]
    assert [e["action"] for e in _events(logs, "unit.pressure_action")] == ["restart"]
    assert _events(logs, "unit.memory_pressure")
    assert _events(logs, "unit.exited")[0]["reason"] == "memory-pressure"
    assert not _events(logs, "unit.oom_kill")


def test_a_drop_before_the_duration_disarms(tmp_path: Path) -> None:
    clock = ManualClock()

    async def main(rig: Rig) -> None:
        r = rig.runner(_pressured_spec("restart"))
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.RUNNING)
        cg = rig.manager.cgroups["svc"]
        cg.pressure(*KEY, 50.0)
        clock.advance(9)
        cg.pressure(*KEY, 30.0)
        clock.advance(9)
        cg.pressure(*KEY, 50.0)  # a new rise: 18 s after the first, 0 s held
        await settled(r)
        assert r.state is State.RUNNING and r.last_exit is None
        await finish(r, task)

    with capture_logs() as logs:
        run(main, tmp_path, clock)
    assert len(_events(logs, "unit.pressure_high")) == 2
    assert [e["value"] for e in _events(logs, "unit.pressure_low")] == [30.0]
    assert not _events(logs, "unit.pressure_action")


def test_stop_leaves_the_unit_exited(tmp_path: Path) -> None:
    clock = ManualClock()

    async def main(rig: Rig) -> None:
        r = rig.runner(_pressured_spec("stop", restart={"policy": "always"}))
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.RUNNING)
        cg = rig.manager.cgroups["svc"]
        cg.pressure(*KEY, 90.0)
        clock.advance(10)
        cg.pressure(*KEY, 90.0)
        await until(r, lambda: r.state is State.EXITED)
        assert r.last_exit == "memory-pressure" and r.restarts == 0
        assert r.error is not None and 'pressure_action = "stop"' in r.error
        await finish(r, task)

    run(main, tmp_path, clock)


def test_signal_goes_to_pid1_and_the_run_goes_on(tmp_path: Path) -> None:
    clock = ManualClock()
    flag = tmp_path / "usr1"
    script = f"trap 'echo >> {flag}' USR1; touch {flag}.ready; while :; do sleep 0.05; done"

    async def main(rig: Rig) -> None:
        r = rig.runner(_pressured_spec("signal:SIGUSR1", script=script))
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.RUNNING)
        async with asyncio.timeout(30):
            while not (tmp_path / "usr1.ready").exists():
                await asyncio.sleep(0.01)
        cg = rig.manager.cgroups["svc"]
        pid = r.run.pid if r.run else 0
        cg.pressure(*KEY, 70.0)
        clock.advance(10)
        cg.pressure(*KEY, 70.0)
        async with asyncio.timeout(30):
            while not flag.exists():
                await asyncio.sleep(0.01)
        clock.advance(5)
        cg.pressure(*KEY, 70.0)  # still high, but not for another whole duration
        await settled(r)
        assert r.state is State.RUNNING and r.run is not None and r.run.pid == pid
        assert r.pressure.signals == 1
        clock.advance(5)
        cg.pressure(*KEY, 70.0)
        await settled(r)
        assert r.pressure.signals == 2
        await finish(r, task)

    with capture_logs() as logs:
        run(main, tmp_path, clock)
    sent = _events(logs, "unit.pressure_signal")
    assert [(e["signal"], e["sent"]) for e in sent] == [("SIGUSR1", True)] * 2
    assert all(e["reason"] != "memory-pressure" for e in _events(logs, "unit.exited"))


def test_a_unit_without_a_limit_has_no_trigger(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        r = rig.runner(make_spec())
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.RUNNING)
        assert rig.manager.cgroups["svc"].triggers == []
        await finish(r, task)

    run(main, tmp_path)
