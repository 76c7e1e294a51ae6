"""ready = "notify" in the state machine, with fake cgroups and launcher (no root): messages are
handed to the runner's Readiness as the endpoint would after its cgroup check."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from engine_fakes import ManualClock, Rig, advance, finish, make_spec, run, settled, until
from structlog.testing import capture_logs

from supervisor.contract import State
from supervisor.engine import readiness
from supervisor.engine.notify import SANDBOX_DIR, NotifyMessage
from supervisor.engine.states import StopReason
from supervisor.engine.unit_runner import UnitRunner


def state(r: UnitRunner) -> State:
    return r.state  # read afresh (mypy narrows attribute reads across awaits)


async def through_backoff(clock: ManualClock, r: UnitRunner) -> None:
    """The restart delay, passed on the clock."""
    await until(r, lambda: r.state is State.BACKOFF)
    await advance(clock, r, r.next_start - clock.now)


def say(r: UnitRunner, **fields: Any) -> None:
    assert r.run is not None
    r.readiness._on_message(NotifyMessage(pid=r.run.pid, **fields))


def test_starting_until_ready_then_watchdog_restart(tmp_path: Path) -> None:
    clock = ManualClock()

    async def main(rig: Rig) -> None:
        spec = make_spec(service={"ready": "notify", "watchdog": "300ms"},
                         restart={"delay": "10ms"})  # fmt: skip
        r = rig.runner(spec)
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.run is not None)
        assert r.state is State.STARTING
        assert rig.launcher.extra_binds == [(str(tmp_path / "state" / "notify" / "svc"),
                                             SANDBOX_DIR, True)]  # fmt: skip
        assert (tmp_path / "state" / "notify" / "svc" / "notify.sock").exists()
        say(r, status="warming")
        await settled(r)
        assert r.state is State.STARTING and r.readiness.status_text == "warming"
        say(r, ready=True, status="serving")
        await until(r, lambda: r.state is State.RUNNING)
        first = r.run.pid if r.run else 0
        for _ in range(4):  # kept alive past the timeout (0.4 s > 0.3 s)
            await advance(clock, r, 0.1)
            say(r, watchdog=True)
        await advance(clock, r, 0.29)
        assert state(r) is State.RUNNING and r.restarts == 0
        await advance(clock, r, 0.01)  # silent for the whole timeout: restarted
        await through_backoff(clock, r)
        await until(r, lambda: r.restarts == 1 and r.run is not None)
        assert r.last_exit == "watchdog" and r.run is not None and r.run.pid != first
        assert state(r) is State.STARTING  # the new run is not ready until it says so
        r.remove()
        await asyncio.wait_for(task, 60)
        assert not (tmp_path / "state" / "notify" / "svc").exists()

    run(main, tmp_path, clock)


def test_start_timeout_extend_and_fail(tmp_path: Path) -> None:
    clock = ManualClock()

    async def main(rig: Rig) -> None:
        spec = make_spec(service={"ready": "notify", "start_timeout": "200ms"})
        r = rig.runner(spec)
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.run is not None)
        await advance(clock, r, 0.1)
        say(r, extend_timeout_usec=500_000)  # from now: 0.5 s instead of the 0.1 s left
        await advance(clock, r, 0.45)
        assert state(r) is State.STARTING
        await advance(clock, r, 0.05)
        await until(r, lambda: r.state is State.FAILED)
        assert r.last_exit == "start-timeout" and r.error and "start_timeout" in r.error
        assert r.restarts == 0 and r.run is None
        assert rig.manager.cgroups["svc"].destroyed
        r.remove()
        await asyncio.wait_for(task, 60)

    run(main, tmp_path, clock)


def test_stopping_1_is_the_service_ending_itself(tmp_path: Path) -> None:
    """STOPPING=1: `stopping` at once, no stop_signal, the watchdog no longer counts, and the
    exit that follows goes to the restart policy (a clean one is final with on-failure)."""
    clock = ManualClock()

    async def main(rig: Rig) -> None:
        flag = tmp_path / "done"
        spec = make_spec(
            script=f"echo up; trap 'echo got-term' TERM; until [ -e {flag} ]; do sleep 0.02; done",
            service={"ready": "notify", "watchdog": "200ms", "stop_timeout": "5s"},
        )
        r = rig.runner(spec)
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.run is not None)
        say(r, ready=True)
        await until(r, lambda: r.state is State.RUNNING)
        say(r, stopping=True, status="draining")
        await until(r, lambda: r.state is State.STOPPING)
        assert r.intent is StopReason.SELF_STOP
        await advance(clock, r, 0.5)  # past the watchdog timeout, with no WATCHDOG=1
        assert state(r) is State.STOPPING
        flag.touch()
        await until(r, lambda: r.state is State.EXITED)
        assert r.last_exit == "exit-code:0" and r.restarts == 0
        await finish(r, task)
        assert (tmp_path / "log" / "svc.log").read_text() == "up\n"  # no SIGTERM came

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        run(main, tmp_path, clock)
    (stopping,) = [e for e in logs if e["event"] == "unit.stopping"]
    assert stopping["by"] == "service" and stopping["notify_status"] == "draining"


def test_stopping_1_then_hanging_is_killed_after_stop_timeout(tmp_path: Path) -> None:
    clock = ManualClock()

    async def main(rig: Rig) -> None:
        spec = make_spec(
            script="while :; do sleep 0.02; done",
            service={"stop_timeout": "300ms", "watchdog": "10s"},
            restart={"delay": "10ms"},
        )
        r = rig.runner(spec)
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.RUNNING)
        first = r.run.pid if r.run else 0
        say(r, stopping=True)
        await advance(clock, r, 0.29)
        assert state(r) is State.STOPPING and r.run is not None and r.run.pid == first
        await advance(clock, r, 0.01)  # stop_timeout: SIGKILL
        await through_backoff(clock, r)
        await until(r, lambda: r.restarts == 1 and r.state is State.RUNNING)
        assert r.last_exit == "signal:SIGKILL" and r.run is not None and r.run.pid != first
        assert not r.readiness.stopping  # the new run has said nothing yet
        await finish(r, task)

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        run(main, tmp_path, clock)
    (timeout,) = [e for e in logs if e["event"] == "unit.stop_timeout"]
    assert timeout["signal"] is None  # none was sent: it was stopping by itself
    assert timeout["elapsed"] == 0.3


def test_reloading_1_shows_until_ready_1(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        r = rig.runner(make_spec(service={"ready": "notify"}))
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.run is not None)
        say(r, ready=True)
        await until(r, lambda: r.state is State.RUNNING)
        say(r, reloading=True, status="reloading config")
        assert r.readiness.view()["notify_reloading"] is True
        say(r, ready=True, status="serving")
        assert r.readiness.view()["notify_reloading"] is False
        await settled(r)
        assert state(r) is State.RUNNING and r.restarts == 0  # shown, not acted on
        await finish(r, task)

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        run(main, tmp_path)
    names = [e["event"] for e in logs if e["event"].startswith("unit.notify_reload")]
    assert names == ["unit.notify_reloading", "unit.notify_reloaded"]
    (done,) = [e for e in logs if e["event"] == "unit.notify_reloaded"]
    assert done["status_text"] == "serving"


def test_the_cgroup_check_is_made_at_the_first_message_not_at_the_launch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Making the check reads the daemon's mountinfo: a restart must not wait for it before
    its `unit.started`, and a run that never speaks never pays it."""
    made: list[object] = []

    def counting(cgroup: Any) -> Callable[[int], bool]:
        made.append(cgroup)
        return lambda pid: pid in cgroup.pids()

    monkeypatch.setattr(readiness, "member_check", counting)

    async def main(rig: Rig) -> None:
        r = rig.runner(make_spec(service={"ready": "notify"}))
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.run is not None)
        await settled(r)
        assert made == []  # launched and waiting for READY=1: no check made yet
        assert r.run is not None
        assert not r.readiness._accept(r.run.pid + 100000)  # not in the cgroup
        assert r.readiness._accept(r.run.pid)
        assert made == [r.run.cgroup]  # made once, for this run
        say(r, ready=True)
        await until(r, lambda: r.state is State.RUNNING)
        await finish(r, task)
        assert not r.readiness._accept(1)  # between runs nobody may speak

    run(main, tmp_path)
