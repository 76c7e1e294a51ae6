"""An event's `state` is the unit's state after the event (docs/control.md, "Event names"):
the runner's events over real child processes, fake cgroups and launcher (no root)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from engine_fakes import Rig, finish, make_spec, run, until

from supervisor.contract import State
from supervisor.engine.notify import NotifyMessage


def events_of(main: Callable[[Rig], Coroutine[Any, Any, None]], tmp_path: Path) -> Rig:
    """Run `main` as engine_fakes.run does, and hand back its rig (with the events)."""
    rigs: list[Rig] = []

    async def keep(rig: Rig) -> None:
        rigs.append(rig)
        await main(rig)

    run(keep, tmp_path)
    return rigs[0]


def pairs(rig: Rig) -> list[tuple[str, str]]:
    return [(e.event, e.state) for e in rig.events]


def test_a_crash_then_backoff_then_failed(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        r = rig.runner(make_spec(script="exit 3", restart={"delay": "10ms", "burst": 2}))
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.FAILED)
        await finish(r, task)

    rig = events_of(main, tmp_path)
    assert pairs(rig)[:7] == [
        ("started", "running"),  # ready = "started": running from the exec on
        ("exited", "backoff"),  # the issue's `memhog exited running`
        ("backoff", "backoff"),
        ("started", "running"),
        ("exited", "failed"),
        ("failed", "failed"),
        ("removed", "failed"),
    ]


def test_a_clean_exit_a_stop_and_a_restart(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        job = rig.runner(make_spec("job", script="exit 0", restart={"policy": "no"}))
        svc = rig.runner(make_spec("svc", service={"stop_timeout": "5s"}))
        tasks = [asyncio.create_task(r.main()) for r in (job, svc)]
        job.start()
        svc.start()
        await until(job, lambda: job.state is State.EXITED)
        await until(svc, lambda: svc.state is State.RUNNING)
        first = svc.launches
        svc.restart()
        await until(svc, lambda: svc.launches > first and svc.state is State.RUNNING)
        svc.stop()
        await until(svc, lambda: svc.state is State.STOPPED)
        for r, task in zip((job, svc), tasks, strict=True):
            await finish(r, task)

    rig = events_of(main, tmp_path)
    job = [(e.event, e.state) for e in rig.events if e.unit == "job"]
    assert job[:2] == [("started", "running"), ("exited", "exited")]
    svc = [(e.event, e.state) for e in rig.events if e.unit == "svc"]
    assert svc[:9] == [
        ("started", "running"),
        ("stopping", "stopping"),
        ("exited", "stopped"),  # a restart is a stop, then a start
        ("stopped", "stopped"),
        ("started", "running"),
        ("stopping", "stopping"),
        ("exited", "stopped"),
        ("stopped", "stopped"),
        ("removed", "stopped"),
    ]


def test_notify_is_running_at_ready_and_a_start_timeout_ends_failed(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        ok = rig.runner(make_spec("ok", service={"ready": "notify"}))
        late = rig.runner(make_spec("late", service={"ready": "notify", "start_timeout": "100ms"}))
        tasks = [asyncio.create_task(r.main()) for r in (ok, late)]
        ok.start()
        late.start()
        await until(ok, lambda: ok.run is not None)
        assert ok.run is not None
        ok.readiness._on_message(NotifyMessage(pid=ok.run.pid, ready=True, status="up"))
        await until(ok, lambda: ok.state is State.RUNNING)
        await until(late, lambda: late.state is State.FAILED)
        for r, task in zip((ok, late), tasks, strict=True):
            await finish(r, task)

    rig = events_of(main, tmp_path)
    ok = [e for e in rig.events if e.unit == "ok"]
    assert [(e.event, e.state) for e in ok[:2]] == [("started", "starting"), ("ready", "running")]
    assert ok[1].detail["status_text"] == "up" and ok[1].detail["notify_pid"] > 0
    late = [(e.event, e.state) for e in rig.events if e.unit == "late"]
    assert late[:5] == [
        ("started", "starting"),
        ("start_timeout", "stopping"),
        ("stopping", "stopping"),
        ("exited", "failed"),
        ("failed", "failed"),
    ]
