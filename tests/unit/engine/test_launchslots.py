"""The launch limiter (engine/launchslots.py): a bound, FIFO order, cancellation, and a storm of
runners launching through it (the engine fakes) never exceeding it."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path
from typing import Any

import pytest

from supervisor.contract import State
from supervisor.engine.launchslots import MOST, LaunchSlots, default_limit
from tests.unit.engine import engine_fakes as fx
from tests.unit.engine.engine_fakes import Rig


def test_default_limit_follows_the_cpus_within_bounds() -> None:
    assert default_limit(None) == 2
    assert default_limit(1) == 2
    assert default_limit(2) == 4
    assert default_limit(8) == 16
    assert default_limit(1024) == MOST


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LaunchSlots(0)


def test_release_without_a_slot_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        LaunchSlots(1).release()


def test_idle_observers_are_told_once_the_last_slot_is_back_and_nobody_waits() -> None:
    async def main() -> None:
        slots = LaunchSlots(1)
        told: list[int] = []
        slots.idle_observers.append(lambda: told.append(slots.in_flight))
        gates = [asyncio.Event() for _ in range(3)]

        async def one(i: int) -> None:
            async with slots.held():
                await gates[i].wait()

        tasks = [asyncio.create_task(one(i)) for i in range(3)]
        await asyncio.sleep(0)
        for i in range(2):  # a slot given back with launches still waiting: not idle
            gates[i].set()
            await asyncio.wait_for(tasks[i], 10)
            assert told == []
        gates[2].set()
        await asyncio.wait_for(tasks[2], 10)
        assert told == [0]  # the storm is over: once, with nothing in flight

    asyncio.run(main())


def test_holders_never_exceed_the_limit_and_wait_in_order() -> None:
    async def main() -> None:
        slots = LaunchSlots(2)
        order: list[int] = []
        gates = [asyncio.Event() for _ in range(6)]

        async def one(i: int) -> None:
            async with slots.held():
                order.append(i)
                assert slots.in_flight <= 2
                await gates[i].wait()

        tasks = [asyncio.create_task(one(i)) for i in range(6)]
        while len(order) < 2:
            await asyncio.sleep(0)
        assert order == [0, 1] and slots.waiting == 4
        for i in range(6):  # each release lets exactly the next in line in
            gates[i].set()
            await asyncio.wait_for(tasks[i], 10)
        await asyncio.gather(*tasks)
        assert order == list(range(6))
        assert slots.peak == 2 and slots.in_flight == 0 and slots.waiting == 0

    asyncio.run(main())


def test_a_cancelled_waiter_gives_up_its_place() -> None:
    async def main() -> None:
        slots = LaunchSlots(1)
        await slots.acquire()
        waiter = asyncio.create_task(slots.acquire())
        behind = asyncio.create_task(slots.acquire())
        while slots.waiting < 2:
            await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        slots.release()
        await asyncio.wait_for(behind, 10)  # skips the cancelled one
        assert slots.in_flight == 1 and slots.waiting == 0
        slots.release()

    asyncio.run(main())


def test_a_slot_granted_to_a_waiter_cancelled_meanwhile_passes_on() -> None:
    async def main() -> None:
        slots = LaunchSlots(1)
        await slots.acquire()
        first = asyncio.create_task(slots.acquire())
        second = asyncio.create_task(slots.acquire())
        while slots.waiting < 2:
            await asyncio.sleep(0)
        slots.release()  # granted to `first`, which is cancelled before it runs
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await asyncio.wait_for(second, 10)
        assert slots.in_flight == 1
        slots.release()
        assert slots.in_flight == 0

    asyncio.run(main())


def test_a_freed_slot_waits_for_the_io_the_loop_has_found() -> None:
    """A slot freed while a request waits on a socket goes on only after the loop has read it:
    an API request comes before the next launch's first step, not behind it."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        slots = LaunchSlots(1)
        await slots.acquire()
        order: list[str] = []
        ours, theirs = socket.socketpair()
        loop.add_reader(ours, lambda: order.append("request read"))
        try:

            async def launch() -> None:
                await slots.acquire()
                order.append("next launch")
                slots.release()

            waiter = asyncio.create_task(launch())
            while slots.waiting < 1:
                await asyncio.sleep(0)
            theirs.send(b"GET /v1/units")  # readable at the loop's next poll
            slots.release()
            await asyncio.wait_for(waiter, 10)
            assert order[:2] == ["request read", "next launch"]
        finally:
            loop.remove_reader(ours)
            ours.close()
            theirs.close()

    asyncio.run(main())


def test_one_launch_begins_per_loop_turn() -> None:
    """Two slots freed at once: the second waiter gets its slot a loop turn after the first,
    so their first steps never run back to back in one turn."""

    async def main() -> None:
        slots = LaunchSlots(2)
        await slots.acquire()
        await slots.acquire()
        held_when_first_ran: list[int] = []

        async def launch(i: int) -> None:
            await slots.acquire()
            if i == 0:
                held_when_first_ran.append(slots.in_flight)

        tasks = [asyncio.create_task(launch(i)) for i in range(2)]
        while slots.waiting < 2:
            await asyncio.sleep(0)
        slots.release()
        slots.release()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert held_when_first_ran == [1]  # its step ran before the second was let in
        assert slots.in_flight == 2 and slots.peak == 2
        slots.release()
        slots.release()
        assert slots.in_flight == 0

    asyncio.run(main())


def test_a_slot_with_nobody_waiting_is_taken_at_once() -> None:
    async def main() -> None:
        slots = LaunchSlots(1)
        await slots.acquire()
        slots.release()  # nobody waits: nothing is scheduled
        assert slots.in_flight == 0
        acquired = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)  # one step: no loop turn for a timer in between
        assert acquired.done() and slots.in_flight == 1

    asyncio.run(main())


class Yielding:
    """The fake launcher, but a launch gives the loop a few turns (as a real one awaits its
    children), so other launches reach their slots meanwhile."""

    def __init__(self, inner: fx.FakeLauncher) -> None:
        self.inner = inner

    async def __call__(self, *args: Any, **kwargs: Any) -> fx.Spawned:
        for _ in range(3):
            await asyncio.sleep(0)
        return await self.inner(*args, **kwargs)


def test_a_storm_of_units_launches_through_the_bound(tmp_path: Path) -> None:
    """Twelve units started at once with two slots: all run, never more than two launching."""

    async def main(rig: Rig) -> None:
        slots = LaunchSlots(2)
        rig.host = dataclasses.replace(
            rig.host, launch_slots=slots, launcher=Yielding(rig.launcher)
        )
        runners = [rig.runner(fx.make_spec(f"u{i}", "sleep 60")) for i in range(12)]
        tasks = [asyncio.create_task(r.main()) for r in runners]
        for r in runners:
            r.start()
        try:
            for r in runners:
                await fx.until(r, lambda r=r: r.state is State.RUNNING)
            assert slots.peak == 2 and slots.in_flight == 0
            assert len(rig.launcher.launched) == 12
        finally:
            for r, t in zip(runners, tasks, strict=True):
                await fx.finish(r, t)

    fx.run(main, tmp_path)


def test_a_resources_change_while_the_launch_is_awaited_reaches_the_new_run(
    tmp_path: Path,
) -> None:
    """A reload's live [resources] update that comes while the unit's launch is awaited (no run
    yet to write to) is written to the run once it exists, not lost until the next restart."""

    async def main(rig: Rig) -> None:
        entered, gate = asyncio.Event(), asyncio.Event()

        async def gated(*args: Any, **kwargs: Any) -> fx.Spawned:
            entered.set()
            await gate.wait()
            return await rig.launcher(*args, **kwargs)

        rig.host = dataclasses.replace(rig.host, launcher=gated)
        spec = fx.make_spec("svc", "sleep 60")
        runner = rig.runner(spec)
        task = asyncio.create_task(runner.main())
        runner.start()
        try:
            await asyncio.wait_for(entered.wait(), 60)
            bigger = fx.make_spec("svc", "sleep 60", resources={"memory_max": "64M"})
            assert bigger.restart_hash == spec.restart_hash and bigger.hash != spec.hash
            runner.update_live(bigger)  # what the reconciler does for a live change
            gate.set()
            await fx.until(runner, lambda: runner.state is State.RUNNING)
            assert rig.manager.cgroups["svc"].limits.memory_max == 64 << 20
            assert runner.run_spec is bigger
        finally:
            gate.set()
            await fx.finish(runner, task)

    fx.run(main, tmp_path)
