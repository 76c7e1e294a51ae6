"""The unit state machine on real child processes, with fake cgroups and launcher (no root)."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from engine_fakes import Rig, finish, make_spec, run, settled, until
from structlog.testing import capture_logs

from supervisor.cgroups import Limits
from supervisor.contract import State
from supervisor.engine import logwriter
from supervisor.engine.run import run_age
from supervisor.engine.states import Intent, StopReason
from supervisor.engine.store import UnitRecord
from supervisor.linux import pidfd as proc

CAPTURE = [structlog.contextvars.merge_contextvars]
KERNEL = tuple(int(x) for x in os.uname().release.split(".")[:2])


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def test_crash_backoff_then_failed(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        spec = make_spec(script="echo out; exit 3", restart={"delay": "50ms", "burst": 3})
        r = rig.runner(spec)
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.FAILED)
        assert r.restarts == 2 and r.launches == 3
        assert list(r.recent_exits) == ["exit-code:3"] * 3
        assert r.error and "start limit" in r.error
        await finish(r, task)
        assert rig.store.load_all() == {}

    with capture_logs(processors=CAPTURE) as logs:
        run(main, tmp_path)
    assert [e["reason"] for e in events(logs, "unit.exited")] == ["exit-code:3"] * 3
    assert [e["delay"] for e in events(logs, "unit.backoff")] == [0.05, 0.1]
    assert len(events(logs, "unit.failed")) == 1
    started = events(logs, "unit.started")
    assert len(started) == 3 and all(e["unit"] == "svc" and e["pid"] > 0 for e in started)
    assert logwriter.WRITER.flush(30)  # the log file is written on the log writer thread
    assert (tmp_path / "log" / "svc.log").read_text() == "out\n" * 3


def test_a_restart_saves_no_starting_record_before_its_pid(tmp_path: Path) -> None:
    """Between a restart's BACKOFF and its launch's PID the state file keeps `backoff` (which
    a daemon dying there resumes as it would `starting`): one state write fewer a restart."""
    saved: list[tuple[str, int | None]] = []

    async def main(rig: Rig) -> None:
        save = rig.store.save
        rig.store.save = lambda record: (saved.append((record.state, record.pid)), save(record))[1]  # type: ignore[method-assign]
        r = rig.runner(make_spec(script="exit 1", restart={"delay": "0", "burst": 3}))
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.FAILED)
        assert r.restarts == 2
        await finish(r, task)

    run(main, tmp_path)
    after_first_exit = saved[[state for state, _ in saved].index("backoff") :]
    assert ("starting", None) not in after_first_exit, saved
    assert [state for state, _ in after_first_exit].count("backoff") == 2, saved


def test_policy_no_and_clean_exit(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        r = rig.runner(make_spec(script="exit 0"))  # on-failure: a clean exit is final
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.EXITED)
        assert r.last_exit == "exit-code:0" and r.restarts == 0
        r2 = rig.runner(make_spec("other", script="kill -9 $$", restart={"policy": "no"}))
        task2 = asyncio.create_task(r2.main())
        r2.start()
        await until(r2, lambda: r2.state is State.EXITED)
        assert r2.last_exit == "signal:SIGKILL"  # no OOM kill counted: a plain SIGKILL
        await finish(r, task)
        await finish(r2, task2)

    run(main, tmp_path)


async def trapped(flag: Path) -> None:
    """Until the service's shell has run its `trap '' TERM` (it touches `flag` next): `running`
    comes at the launch, and a SIGTERM before the trap would end the shell at once."""
    async with asyncio.timeout(60):
        while not flag.exists():
            await asyncio.sleep(0.01)


def ignoring_term(flag: Path) -> str:
    return f"trap '' TERM; touch {flag}; while :; do sleep 0.05; done"


def test_stop_escalates_to_the_cgroup(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        flag = tmp_path / "trapped"
        spec = make_spec(script=ignoring_term(flag), service={"stop_timeout": "300ms"})
        r = rig.runner(spec)
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.RUNNING)
        await trapped(flag)
        began = time.monotonic()
        r.stop()
        await until(r, lambda: r.state is State.STOPPED)
        assert 0.3 <= time.monotonic() - began < 3
        assert r.last_exit == "signal:SIGKILL"
        assert rig.manager.cgroups["svc"].destroyed
        await finish(r, task)

    with capture_logs(processors=CAPTURE) as logs:
        run(main, tmp_path)
    (timeout,) = events(logs, "unit.stop_timeout")
    assert timeout["log_level"] == "warning" and timeout["elapsed"] >= 0.3
    assert timeout["unit"] == "svc" and timeout["signal"] == "SIGTERM"


def test_launch_error_is_failed(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        rig.launcher.fail = "exec /nope: No such file or directory"
        r = rig.runner(make_spec())
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.FAILED)
        assert r.last_exit == "launch-error:exec: exec /nope: No such file or directory"
        assert rig.manager.cgroups["svc"].destroyed
        rig.launcher.fail = None
        r.start()  # an operator start resets the failed unit
        await until(r, lambda: r.state is State.RUNNING)
        await finish(r, task)

    run(main, tmp_path)


@pytest.mark.parametrize("policy", ["on-failure", "no"])
def test_a_launch_out_of_fds_is_retried_like_a_crash(tmp_path: Path, policy: str) -> None:
    """EMFILE from any step of a launch (here the launcher's): `launch-error:resources`, and
    a retry in backoff that succeeds once fds are back (policy "no": failed, as any launch
    error, since it asked for no retries)."""

    async def main(rig: Rig) -> None:
        rig.launcher.fail, rig.launcher.fail_errno = "pipe: Too many open files", errno.EMFILE
        r = rig.runner(make_spec(restart={"policy": policy, "delay": "10ms"}))
        task = asyncio.create_task(r.main())
        r.start()
        want = State.BACKOFF if policy != "no" else State.FAILED
        await until(r, lambda: r.state is want)
        assert r.last_exit is not None
        assert r.last_exit.startswith(
            "launch-error:resources: too many open files (EMFILE: none free of the daemon's "
            "limit of "
        ), r.last_exit
        rig.launcher.fail = None  # fds are back
        if policy == "no":
            r.start()
        await until(r, lambda: r.state is State.RUNNING)
        await finish(r, task)

    run(main, tmp_path)


def test_oom_kill_of_pid1_per_policy(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        r = rig.runner(make_spec(oom={"policy": "stop"}))
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.RUNNING)
        assert r.run is not None
        rig.manager.cgroups["svc"].oom_kill(victim=r.run.pid)
        await until(r, lambda: r.state is State.EXITED)
        assert r.last_exit == "oom-killed" and r.oom_kills == 1
        await finish(r, task)

    with capture_logs(processors=CAPTURE) as logs:
        run(main, tmp_path)
    assert [e["reason"] for e in events(logs, "unit.exited")] == ["oom-killed"]


def test_oom_kill_of_another_process(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        # continue: counted and logged, the unit keeps running
        r = rig.runner(make_spec(oom={"policy": "continue"}))
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.RUNNING)
        pid = r.run.pid if r.run else 0
        rig.manager.cgroups["svc"].oom_kill()
        await until(r, lambda: r.oom_kills == 1)
        await settled(r)
        assert r.state is State.RUNNING and r.oom_kills == 1 and r.run and r.run.pid == pid
        # restart: the sandbox is restarted as a failure with reason oom-killed
        r2 = rig.runner(make_spec("r2", restart={"delay": "10ms"}))
        task2 = asyncio.create_task(r2.main())
        r2.start()
        await until(r2, lambda: r2.state is State.RUNNING)
        rig.manager.cgroups["r2"].oom_kill()
        await until(r2, lambda: r2.restarts == 1 and r2.state is State.RUNNING)
        assert r2.last_exit == "oom-killed" and r2.oom_kills == 1
        await finish(r, task)
        await finish(r2, task2)

    with capture_logs(processors=CAPTURE) as logs:
        run(main, tmp_path)
    kills = events(logs, "unit.oom_kill")
    assert [(e["unit"], e["count"], e["pid1_alive"]) for e in kills] == [
        ("svc", 1, True),
        ("r2", 1, True),
    ]


@pytest.mark.usefixtures("not_a_subreaper")
def test_readopt_a_process_that_is_not_our_child(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        # A grandchild whose parent exits: reparented to init (we are no subreaper here).
        out = subprocess.run(
            ["/bin/sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        pid = int(out.stdout)
        spec = make_spec()
        record = UnitRecord(
            "svc", "running", spec=spec.to_json(), spec_hash=spec.hash, pid=pid,
            pid_start=proc.start_time(pid), started_at=time.time() - 100, restarts=4,
        )  # fmt: skip
        rig.manager.create("svc", Limits()).add_pid(pid)  # where a sandbox's PID 1 is
        r = rig.runner(spec)
        r.resume(record)
        # Its age is its PID 1's, on the boot clock, not what the record's wall time says.
        age = run_age(record.pid_start, None, 0.0)
        assert r.state is State.RUNNING and r.run is not None
        assert age <= r.run.uptime() < age + 30
        task = asyncio.create_task(r.main())
        os.kill(pid, signal.SIGKILL)  # this test's own process, killed by PID
        await until(r, lambda: r.state is State.BACKOFF, timeout=10)
        # The status of a process we did not fork: from PIDFD_INFO_EXIT (Linux 6.15+).
        expected = "signal:SIGKILL" if KERNEL >= (6, 15) else "lost"
        assert r.last_exit == expected
        assert r.restarts == 4
        await finish(r, task)

    run(main, tmp_path)


def test_readopt_lost_and_pid_reuse(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        spec = make_spec(restart={"policy": "no"})
        record = UnitRecord(
            "svc", "running", spec=spec.to_json(), pid=os.getpid(),
            pid_start=12345, started_at=time.time() - 5,  # our PID, another start time
        )  # fmt: skip
        r = rig.runner(spec)
        r.resume(record)
        assert r.state is State.EXITED and r.last_exit == "lost" and r.run is None

    with capture_logs(processors=CAPTURE) as logs:
        run(main, tmp_path)
    (lost,) = events(logs, "unit.exited")
    assert lost["reason"] == "lost" and lost["log_level"] == "warning"


def test_operator_stop_during_a_daemon_initiated_stop_is_kept(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        # An OOM kill of another process: the daemon ends the run (reason oom-killed); PID 1
        # ignores SIGTERM, so the run stays `stopping` for stop_timeout.
        flag = tmp_path / "trapped"
        spec = make_spec(
            script=ignoring_term(flag),
            service={"stop_timeout": "500ms"},
            restart={"delay": "10ms"},
        )
        r = rig.runner(spec)
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.state is State.RUNNING)
        await trapped(flag)
        rig.manager.cgroups["svc"].oom_kill()
        await until(r, lambda: r.state is State.STOPPING)
        assert r.intent is StopReason.OOM_KILLED
        r.stop()  # the operator's stop must win over the restart the OOM policy would do
        assert r.intent is Intent.STOP
        await until(r, lambda: r.state is not State.STOPPING)
        assert r.state is State.STOPPED and r.restarts == 0 and r.launches == 1
        assert r.last_exit == "oom-killed"  # why the run ended: the daemon's reason
        await finish(r, task)

    run(main, tmp_path)


def test_an_oom_kill_before_the_watch_exists_is_counted(tmp_path: Path) -> None:
    """The kernel killed a process in the new cgroup before the run's OOM watch was set up
    (whose counter starts from the current value): the run counts it from the launch's base."""

    async def main(rig: Rig) -> None:
        rig.launcher.oom_at_once = True
        r = rig.runner(make_spec(oom={"policy": "continue"}))
        task = asyncio.create_task(r.main())
        r.start()
        await until(r, lambda: r.oom_kills == 1)
        await settled(r)
        assert r.state is State.RUNNING and r.restarts == 0
        await finish(r, task)

    with capture_logs(processors=CAPTURE) as logs:
        run(main, tmp_path)
    assert [e["count"] for e in events(logs, "unit.oom_kill")] == [1]
