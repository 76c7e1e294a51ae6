"""A restarting unit's next cgroup made ahead and its ended runs' removed after
(engine/nextcgroup.py), on real child processes with the fake cgroups, here renamable as v1's."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from engine_fakes import ManualClock, Rig, advance, finish, make_spec, run, settled, until

from supervisor.contract import State
from supervisor.engine.run import limits_from
from supervisor.engine.unit_runner import UnitRunner


def alive(rig: Rig) -> list[str]:
    return sorted(rig.manager.list_units())


async def crash(r: UnitRunner, restarts: int) -> None:
    """SIGKILL the run's PID 1 and wait for the policy's restart to be running and idle."""
    assert r.run is not None
    os.kill(r.run.pid, signal.SIGKILL)
    await until(r, lambda: r.restarts == restarts and r.state is State.RUNNING)
    await settled(r)


async def started(
    rig: Rig, delay: str = "0", renames: bool = True
) -> tuple[UnitRunner, asyncio.Task[None]]:
    """A unit restarting after `delay`, started and running; its cgroups renamable as v1's,
    or not (`renames=False`: cgroup2)."""
    rig.manager.renames = renames
    r = rig.runner(make_spec(restart={"delay": delay}))
    task = asyncio.create_task(r.main())
    r.start()
    await until(r, lambda: r.state is State.RUNNING)
    return r, task


def test_a_restarting_unit_takes_the_cgroup_made_ahead(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        r, task = await started(rig)
        await settled(r)
        # A unit that never restarted holds no spare (an empty cgroup costs the host).
        assert alive(rig) == ["svc"] and rig.manager.created == 1
        first = rig.manager.cgroups["svc"]
        await crash(r, 1)
        # The first restart made its cgroup; once it had exec'd, the next one was made, and
        # the ended run's cgroup, renamed out of the way, removed.
        assert first.destroyed and first.name.startswith(".gone.svc.")
        assert alive(rig) == [".next.svc", "svc"] and rig.manager.created == 3
        spare = r.next_cgroup.spare
        assert spare is not None and spare.pids() == []
        await crash(r, 2)
        # The second restart took the spare: no cgroup made on its path, one made for later.
        assert rig.manager.cgroups["svc"] is spare
        assert r.run is not None and r.run.pid in spare.pids()
        assert alive(rig) == [".next.svc", "svc"] and rig.manager.created == 4
        assert r.next_cgroup.retired == 0
        r.stop()
        await until(r, lambda: r.state is State.STOPPED)
        await settled(r)
        assert alive(rig) == []  # stopped: no restart is coming, so no spare either
        await finish(r, task)

    run(main, tmp_path)


def test_a_spare_made_with_other_limits_is_not_taken(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        r, task = await started(rig)
        await crash(r, 1)
        stale = r.next_cgroup.spare
        assert stale is not None
        changed = make_spec(restart={"delay": "0"}, resources={"memory_max": "48M"})
        r.update_live(changed)  # a [resources]-only reload: the running cgroup gets them
        await crash(r, 2)
        want = limits_from(changed.unit.resources, changed.unit.sandbox)
        assert stale.destroyed and rig.manager.cgroups["svc"] is not stale
        assert rig.manager.cgroups["svc"].limits == want
        spare = r.next_cgroup.spare  # the next one is made with the new limits
        assert spare is not None and spare.limits == want
        await finish(r, task)
        assert alive(rig) == []

    run(main, tmp_path)


def test_an_oom_kill_has_the_next_cgroup_made_before_the_exit(tmp_path: Path) -> None:
    clock = ManualClock()  # the restart waits out its delay until the test moves the clock

    async def main(rig: Rig) -> None:
        r, task = await started(rig, delay="5s")  # [oom] policy = "restart"
        await settled(r)
        assert r.next_cgroup.spare is None
        # An OOM kill is seen before PID 1's exit (the kernel tears a victim down for some
        # ms): the spare is made then. Here another process was the victim, and the run is
        # ended after OOM_GRACE; the spare waits through the restart's delay.
        rig.manager.cgroups["svc"].oom_kill()
        await until(r, lambda: r.state is State.BACKOFF)
        await settled(r)
        spare = r.next_cgroup.spare
        assert spare is not None and rig.manager.created == 2 and spare.pids() == []
        assert alive(rig) == [".next.svc"]  # the ended run's cgroup is gone
        await advance(clock, r, 5)
        await until(r, lambda: r.restarts == 1 and r.state is State.RUNNING)
        assert rig.manager.cgroups["svc"] is spare and r.last_exit == "oom-killed"
        await finish(r, task)
        assert alive(rig) == []

    run(main, tmp_path, clock)


def test_no_spare_where_cgroups_cannot_be_renamed(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        r, task = await started(rig, renames=False)  # cgroup2
        first = rig.manager.cgroups["svc"]
        await crash(r, 1)
        await crash(r, 2)
        # Each run's cgroup removed when it ended, the next made at its launch, as before.
        assert first.destroyed and r.next_cgroup.spare is None
        assert alive(rig) == ["svc"] and rig.manager.created == 3
        await finish(r, task)

    run(main, tmp_path)


def test_a_failed_restart_leaves_no_cgroup(tmp_path: Path) -> None:
    async def main(rig: Rig) -> None:
        r, task = await started(rig)
        await crash(r, 1)
        spare = r.next_cgroup.spare
        assert spare is not None
        rig.launcher.fail = "no such file"  # the next exec fails: the unit fails, settled
        assert r.run is not None
        os.kill(r.run.pid, signal.SIGKILL)
        await until(r, lambda: r.state is State.FAILED)
        await settled(r)
        # The failed launch took the spare and removed it; none is made for a launch that
        # failed, and the ended runs' cgroups are gone.
        assert spare.destroyed and r.next_cgroup.spare is None and alive(rig) == []
        await finish(r, task)

    run(main, tmp_path)
