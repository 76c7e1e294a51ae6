"""The restart trace (engine/restarttrace.py): stamps in time order, and a traced restart."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import structlog
from engine_fakes import Rig, finish, make_spec, run, until
from structlog.testing import capture_logs

from supervisor.contract import State
from supervisor.engine import restarttrace
from supervisor.engine.restarttrace import OFF, RestartTrace

CAPTURE = [structlog.contextvars.merge_contextvars]


def test_stages_are_in_time_order_from_the_first_stamp() -> None:
    trace = RestartTrace()
    trace.mark("b", 3_500_000)
    trace.mark("a", 1_000_000)
    trace.extend([("launcher", 2_000_000), ("same time, marked later", 3_500_000)])
    assert trace.first_ns == 1_000_000
    assert trace.stages() == [
        ["a", 0.0], ["launcher", 1.0], ["b", 2.5], ["same time, marked later", 2.5],
    ]  # fmt: skip


def test_off_takes_nothing() -> None:
    OFF.mark("a")
    OFF.extend([("b", 1)])
    assert OFF.stages() == [] and OFF.first_ns is None


@pytest.mark.parametrize("value, on", [("1", True), ("", False), ("0", False), ("yes", False)])
def test_enabled_only_by_1(monkeypatch: pytest.MonkeyPatch, value: str, on: bool) -> None:
    monkeypatch.setenv(restarttrace.ENV, value)
    assert restarttrace.enabled() is on


def traces(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "unit.restart_trace"]


def test_a_traced_restart_logs_its_hops_in_order(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        rig.host = dataclasses.replace(rig.host, trace_restarts=True)
        r = rig.runner(make_spec(script="exit 1", restart={"delay": "0", "burst": 3}))
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.FAILED)
        assert r.launches == 3
        await finish(r, task)

    with capture_logs(processors=CAPTURE) as logs:
        run(main, tmp_path)
    found = traces(logs)
    # The first launch is a start, not a restart; the failed third run is not restarted.
    assert len(found) == 2
    for event in found:
        stages = [stage for stage, _ in event["stages"]]
        assert stages == [
            restarttrace.EXIT_SEEN, restarttrace.RUN_CLEANED, restarttrace.DECIDED,
            restarttrace.LAUNCH_BEGUN, restarttrace.CGROUP_MADE, restarttrace.PID1_REPORTED,
            restarttrace.EXEC_SEEN, restarttrace.RUNNING,
        ]  # fmt: skip
        times = [ms for _, ms in event["stages"]]
        assert times[0] == 0.0 and times == sorted(times)
        assert event["unit"] == "svc" and event["t0_ns"] > 0 and event["pid"] > 0


def test_an_oom_kill_is_the_first_hop(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        rig.host = dataclasses.replace(rig.host, trace_restarts=True)
        r = rig.runner(make_spec(restart={"delay": "0"}))
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.RUNNING)
        rig.manager.cgroups["svc"].oom_kill()
        await until(r, lambda: r.restarts == 1 and r.state is State.RUNNING)
        assert r.last_exit == "oom-killed" and r.oom_kills == 1
        await finish(r, task)

    with capture_logs(processors=CAPTURE) as logs:
        run(main, tmp_path)
    (event,) = traces(logs)
    stages = [stage for stage, _ in event["stages"]]
    assert stages[:2] == [restarttrace.OOM_SEEN, restarttrace.EXIT_SEEN]


def test_untraced_restarts_log_no_trace(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        r = rig.runner(make_spec(script="exit 1", restart={"delay": "0", "burst": 2}))
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.FAILED)
        await finish(r, task)

    with capture_logs(processors=CAPTURE) as logs:
        run(main, tmp_path)
    assert traces(logs) == []
