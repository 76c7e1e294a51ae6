"""Resume after a daemon crash: the next daemon finishes what the last one was doing to a run
(`UnitRecord.intent`), whether the old PID 1 is still alive (re-adopted) or not (lost)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from engine_fakes import ManualClock, Rig, advance, finish, make_spec, run, settled, until
from structlog.testing import capture_logs

from supervisor.cgroups import Limits
from supervisor.contract import State
from supervisor.engine.run import run_age
from supervisor.engine.states import StopReason
from supervisor.engine.status import record as unit_record
from supervisor.engine.store import UnitRecord
from supervisor.engine.unit_runner import UnitRunner
from supervisor.linux import pidfd as proc
from supervisor.unit.spec import UnitSpec


def orphan() -> int:
    """A `sleep` whose parent has exited: not our child, like a service after a daemon crash."""
    out = subprocess.run(
        ["/bin/sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(out.stdout)


def gone(pid: int) -> bool:
    return not proc.is_running(pid, proc.start_time(pid) or -1)


def record_of(spec: UnitSpec, pid: int, state: str, intent: str | None) -> UnitRecord:
    return UnitRecord(
        spec.name, state, spec=spec.to_json(), spec_hash=spec.hash, pid=pid,
        pid_start=proc.start_time(pid), started_at=time.time() - 10, intent=intent,
    )  # fmt: skip


async def resumed(
    rig: Rig, record: UnitRecord, spec: UnitSpec, *, in_cgroup: bool = True, oom_counter: int = 0
) -> tuple[UnitRunner, Any]:
    """A runner resumed from `record`; `in_cgroup`: the record's pid is in the unit's cgroup,
    as a sandbox's PID 1 is (re-adoption refuses a pid that is not)."""
    cgroup = rig.manager.create(spec.name, Limits())
    cgroup.oom = oom_counter
    if in_cgroup and record.pid is not None:
        cgroup.add_pid(record.pid)
    runner = rig.runner(spec)
    runner.resume(record)
    return runner, asyncio.create_task(runner.main())


@pytest.mark.parametrize(
    ("state", "intent", "launches"),
    [
        ("stopping", "restart", 1),  # `sandboxctl restart` or a reload of a changed file
        ("running", "restart", 1),  # the command was saved, the task had not acted yet
        ("stopping", "stop", 0),
        ("stopping", None, 0),  # a record from before `intent`: a stop
    ],
)
def test_adopted_run_ends_per_intent(
    tmp_path: Path, state: str, intent: str | None, launches: int
) -> None:
    async def main(rig: Rig) -> None:
        spec = make_spec(service={"stop_timeout": "5s"})
        pid = orphan()
        runner, task = await resumed(rig, record_of(spec, pid, state, intent), spec)
        assert runner.state is State.STOPPING and runner.run is not None
        want = State.RUNNING if launches else State.STOPPED
        await until(runner, lambda: runner.state is want and runner.launches == launches)
        assert gone(pid)
        assert len(rig.launcher.launched) == launches
        if launches:
            assert runner.run is not None and runner.run.pid != pid
            assert runner.restarts == 0  # an operator's restart, not the policy's
        await finish(runner, task)

    run(main, tmp_path)


def test_adopted_run_ended_by_the_daemon_goes_through_the_policy(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        spec = make_spec(service={"stop_timeout": "5s"}, restart={"delay": "10ms"})
        pid = orphan()
        runner, task = await resumed(rig, record_of(spec, pid, "stopping", "watchdog"), spec)
        await until(runner, lambda: runner.state is State.RUNNING and runner.launches == 1)
        assert gone(pid) and runner.restarts == 1 and runner.last_exit == "watchdog"
        await finish(runner, task)

    run(main, tmp_path)


@pytest.mark.parametrize("reaper", ["init", "nobody"])
def test_adopted_self_stop_gets_no_signal_then_stop_timeout(
    tmp_path: Path, reaper: str, request: pytest.FixtureRequest
) -> None:
    """`nobody`: the orphan's parent is this process as a subreaper that never reaps (as
    pytest is once a launcher test made it one): its exit status never shows, and the run
    still ends once the wait for it is over, on the machine's time, whatever the unit's
    clock says."""
    clock = ManualClock()
    if reaper == "init":
        request.getfixturevalue("not_a_subreaper")
    else:
        request.getfixturevalue("a_subreaper")

    async def main(rig: Rig) -> None:
        spec = make_spec(service={"stop_timeout": "600ms"}, restart={"policy": "no"})
        pid = orphan()  # a `sleep`: SIGTERM would end it at once
        if reaper == "nobody":
            request.addfinalizer(lambda: os.waitpid(pid, 0))  # our zombie, reaped at the end
        runner, task = await resumed(rig, record_of(spec, pid, "stopping", "self-stop"), spec)
        assert runner.state is State.STOPPING and runner.intent is StopReason.SELF_STOP
        await advance(clock, runner, 0.59)
        assert not gone(pid)  # no stop_signal: the service is ending by itself
        assert runner.state is State.STOPPING
        await advance(clock, runner, 0.01)  # stop_timeout: SIGKILL
        await until(runner, lambda: runner.state is State.EXITED)
        assert gone(pid) and runner.launches == 0
        await finish(runner, task)

    run(main, tmp_path, clock)


@pytest.mark.parametrize(
    ("intent", "state"),
    [
        ("restart", State.RUNNING),
        ("stop", State.STOPPED),
        (None, State.EXITED),
        ("self-stop", State.EXITED),  # it said STOPPING=1; how it ended is unknown
    ],
)
def test_lost_run_per_intent(tmp_path: Path, intent: str | None, state: State) -> None:
    """PID 1 ended while no daemon watched: `lost`, then the intent (policy "no" would
    leave a plain crash exited, but a restart was asked for)."""

    async def main(rig: Rig) -> None:
        spec = make_spec(restart={"policy": "no"})
        pid = orphan()
        record = record_of(spec, pid, "stopping" if intent else "running", intent)
        os.kill(pid, signal.SIGKILL)  # this test's own process, killed by PID
        deadline = time.monotonic() + 20
        while not gone(pid):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        runner, task = await resumed(rig, record, spec)
        assert runner.last_exit == "lost"
        await until(runner, lambda: runner.state is state and not runner.start_pending)
        assert len(rig.launcher.launched) == (1 if intent == "restart" else 0)
        await finish(runner, task)

    run(main, tmp_path)


def test_restart_command_is_saved_before_the_task_acts(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        spec = make_spec()
        runner = rig.runner(spec)
        task = asyncio.create_task(runner.main())
        runner.start()
        await until(runner, lambda: runner.state is State.RUNNING)
        assert rig.store.load_all()[spec.name].intent is None
        # No await in between: the intent is queued before any transition, and a unit's
        # records land in order, so the file says it before any record of what followed.
        runner.restart()
        assert rig.store.load_all()[spec.name].intent == "restart"
        runner.stop()
        assert rig.store.load_all()[spec.name].intent == "stop"
        await until(runner, lambda: runner.state is State.STOPPED)
        assert rig.store.load_all()[spec.name].intent is None
        await finish(runner, task)

    run(main, tmp_path)


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_a_wall_clock_step_changes_no_adopted_uptime(tmp_path: Path, step: float) -> None:
    """The wall clock stepped an hour while no daemon ran: the re-adopted run's age (what
    `reset_after` judges) comes from its PID 1's start on the boot clock, not the step."""

    async def main(rig: Rig) -> None:
        rig.host = dataclasses.replace(rig.host, wall=lambda: time.time() + step)
        spec = make_spec()
        pid = orphan()
        age = run_age(proc.start_time(pid), None, 0.0)
        runner, task = await resumed(rig, record_of(spec, pid, "running", None), spec)
        assert runner.state is State.RUNNING and runner.run is not None
        assert age <= runner.run.uptime() < age + 30
        await finish(runner, task)

    run(main, tmp_path)


def test_run_age_prefers_the_boot_clock() -> None:
    own_start = proc.start_time(os.getpid())
    assert own_start is not None
    own_age = run_age(own_start, None, 0.0)
    for wall_now in (time.time() - 3600, time.time() + 3600):
        assert own_age <= run_age(own_start, time.time(), wall_now) < own_age + 30
    assert run_age(None, 100.0, 160.0) == 60.0  # no start time: the wall clock it is
    future = int(1e12)  # a start later than now: a record from an earlier boot
    assert run_age(future, 100.0, 160.0) == 60.0
    assert run_age(future, 200.0, 160.0) == 0.0  # never negative


def test_a_live_pid_outside_the_units_cgroup_is_never_adopted_nor_signalled(
    tmp_path: Path,
) -> None:
    """PID reuse with a matching start time (a corrupt or planted record): the process is not
    in the unit's cgroup, so the run is `lost` and the process is left alone."""

    async def main(rig: Rig) -> None:
        spec = make_spec(restart={"policy": "no"})
        pid = orphan()
        try:
            record = record_of(spec, pid, "stopping", "stop")
            runner, task = await resumed(rig, record, spec, in_cgroup=False)
            assert runner.run is None and runner.last_exit == "lost"
            await until(runner, lambda: runner.state is State.STOPPED)
            assert not gone(pid) and rig.launcher.launched == []
            await finish(runner, task)
        finally:
            os.kill(pid, signal.SIGKILL)  # this test's own process, killed by PID

    run(main, tmp_path)


def test_a_run_the_record_does_not_name_is_killed_and_said(tmp_path: Path) -> None:
    """The daemon died before its latest record reached the disk (state saves are written on
    a thread, store.py): the record names an earlier run, whose PID 1 is gone, and the unit's
    cgroup holds the run it did not know of. The cgroup is the truth: that run is killed (one
    `unit.leftover_killed`), and the unit starts once, per its policy."""

    async def main(rig: Rig) -> None:
        spec = make_spec(restart={"policy": "always", "delay": "10ms"})
        earlier, unrecorded = orphan(), orphan()
        try:
            record = record_of(spec, earlier, "running", None)
            os.kill(earlier, signal.SIGKILL)  # this test's own process, killed by PID
            deadline = time.monotonic() + 20
            while not gone(earlier):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            rig.manager.create(spec.name, Limits()).add_pid(unrecorded)
            runner = rig.runner(spec)
            with capture_logs() as logs:
                runner.resume(record)
            task = asyncio.create_task(runner.main())
            assert runner.last_exit == "lost"
            killed = [e for e in logs if e["event"] == "unit.leftover_killed"]
            assert [(e["unit"], e["pids"], e["recorded_pid"]) for e in killed] == [
                (spec.name, [unrecorded], earlier)
            ]
            await until(runner, lambda: runner.state is State.RUNNING)
            assert len(rig.launcher.launched) == 1
            deadline = time.monotonic() + 20
            while not gone(unrecorded):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await finish(runner, task)
        finally:
            for pid in (earlier, unrecorded):  # this test's own processes, killed by PID
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    run(main, tmp_path)


def test_oom_kills_while_no_daemon_watched_are_counted_once(tmp_path: Path) -> None:
    """The record says up to where the last daemon counted (`oom_base`): a kill after that,
    while no daemon ran, is counted at re-adoption, and none before it is counted again."""

    async def main(rig: Rig) -> None:
        spec = make_spec(oom={"policy": "continue"})
        pid = orphan()
        # 5 kills in the cgroup at launch, 2 counted by the last daemon, 1 while none ran.
        record = dataclasses.replace(record_of(spec, pid, "running", None), oom_kills=2, oom_base=7)
        runner, task = await resumed(rig, record, spec, oom_counter=8)
        await until(runner, lambda: runner.oom_kills == 3)
        await settled(runner)
        assert runner.oom_kills == 3 and runner.state is State.RUNNING
        assert unit_record(runner).oom_base == 8  # what a next daemon starts from
        await finish(runner, task)

    run(main, tmp_path)
