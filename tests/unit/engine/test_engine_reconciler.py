"""Reload semantics end to end in-process: the reconciler with a fake loader, cgroups and
launcher, driven through the Controller methods."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from engine_fakes import ManualClock, make_rig, make_spec, until
from structlog.testing import capture_logs

from supervisor.config import DaemonConfig
from supervisor.contract import HealthState, State
from supervisor.engine.reconciler import Reconciler
from supervisor.errors import UnitNotFound
from supervisor.unit.spec import UnitSpec


@dataclass
class FakeLoad:
    specs: dict[str, UnitSpec] = field(default_factory=dict)
    errors: dict[str, list[object]] = field(default_factory=dict)
    warnings: dict[str, list[object]] = field(default_factory=dict)
    template_errors: dict[str, list[object]] = field(default_factory=dict)


class FakeLoader:
    def __init__(self) -> None:
        self.load = FakeLoad()

    def load_directory(self, directory: Path) -> FakeLoad:
        return self.load


def test_reload_semantics(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        loader = FakeLoader()
        config = DaemonConfig(units_dir=tmp_path, state_dir=tmp_path / "state",
                              log_dir=tmp_path / "log")  # fmt: skip
        loader.load.specs = {
            "keep": make_spec("keep"),
            "gone": make_spec("gone"),
            "edit": make_spec("edit"),
            "live": make_spec("live"),
            "bad": make_spec("bad"),
            "manual": make_spec("manual", service={"autostart": False}),
        }
        async with Reconciler(config, rig.host, loader, rig.store) as rec:
            first = await rec.reload()
            assert first.started == ["bad", "edit", "gone", "keep", "live"]
            assert first.deferred == ["manual"]
            for name in first.started:
                await rec.start(name)
            pids = {s.name: s.pid for s in rec.list_units()}
            assert rec.get_unit("manual").state == "stopped"

            loader.load.specs = {
                "keep": make_spec("keep"),
                "edit": make_spec("edit", script="sleep 200"),
                "live": make_spec("live", resources={"memory_max": "64M"}),
                "new": make_spec("new"),
                "manual": make_spec("manual", service={"autostart": False}),
            }
            loader.load.errors = {"bad": ["bad.toml: service.exec: field required"]}
            result = await rec.reload()
            assert not result.ok
            assert (result.started, result.restarted, result.updated, result.stopped) == (
                ["new"],
                ["edit"],
                ["live"],
                ["gone"],
            )
            assert sorted(result.unchanged) == ["keep", "manual"]
            assert result.invalid == {"bad": ["bad.toml: service.exec: field required"]}

            await rec.start("new")

            def applied() -> bool:  # the edit restarted, the removed unit gone
                now = {s.name: s for s in rec.list_units()}
                edit = now.get("edit")
                return (
                    "gone" not in now
                    and edit is not None
                    and edit.state == "running"
                    and edit.pid not in (None, pids["edit"])
                )

            async with asyncio.timeout(60):
                while not applied():
                    await asyncio.sleep(0.01)
            status = {s.name: s for s in rec.list_units()}
            assert "gone" not in status
            assert status["keep"].pid == pids["keep"]  # untouched
            assert status["live"].pid == pids["live"]  # applied live, no restart
            assert rig.manager.cgroups["live"].limits.memory_max == 64 << 20
            assert status["edit"].state == "running" and status["edit"].pid != pids["edit"]
            assert status["bad"].state == "running" and status["bad"].pid == pids["bad"]
            assert status["bad"].error and "field required" in status["bad"].error

            with pytest.raises(UnitNotFound):
                rec.get_unit("gone")
            stopped = await rec.stop("keep")
            assert stopped.state == "stopped" and stopped.last_exit == "signal:SIGTERM"
            # reload does not undo an operator's stop
            assert "keep" in (await rec.reload()).unchanged
            assert rec.get_unit("keep").state == "stopped"
            restarted = await rec.restart("keep")
            assert restarted.state == "running"
            await rec.shutdown(leave=False)
        assert rig.store.load_all() == {}
        assert all(cg.destroyed for cg in rig.manager.cgroups.values())

    asyncio.run(asyncio.wait_for(main(), 30))


def test_events_stream(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        loader = FakeLoader()
        loader.load.specs = {"a": make_spec("a", script="exit 1", restart={"policy": "no"})}
        config = DaemonConfig(units_dir=tmp_path, log_dir=tmp_path / "log")
        seen: list[Any] = []
        async with Reconciler(config, rig.host, loader, rig.store) as rec:

            async def consume() -> None:
                async for event in rec.events():
                    seen.append((event.unit, event.event))
                    if event.event == "exited":
                        return

            consumer = asyncio.create_task(consume())
            await asyncio.sleep(0)
            await rec.reload()
            await asyncio.wait_for(consumer, 60)
            assert rec.get_unit("a").state == State.EXITED.value
            await rec.shutdown(leave=False)
        assert seen == [("a", "started"), ("a", "exited")]


def test_reload_names_the_seq_its_events_follow(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        loader = FakeLoader()
        config = DaemonConfig(units_dir=tmp_path, log_dir=tmp_path / "log")
        seen: list[Any] = []
        async with Reconciler(config, rig.host, loader, rig.store) as rec:

            async def consume() -> None:
                async for event in rec.events():
                    seen.append(event)

            consumer = asyncio.create_task(consume())
            await asyncio.sleep(0)
            loader.load.specs = {"a": make_spec("a")}
            first = await rec.reload()
            await rec.start("a")
            loader.load.specs = {"a": make_spec("a", script="sleep 200")}
            second = await rec.reload()
            runner = rec.runners["a"]
            await runner.wait(lambda: runner.launches == 2 and runner.state is State.RUNNING)
            consumer.cancel()
            recent = rec.list_units(detail=True)[0].recent_events
            await rec.shutdown(leave=False)
        assert first.seq == 0
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))  # numbered as published
        before = [(e.event, e.state) for e in seen if e.seq <= second.seq]
        after = [(e.event, e.state) for e in seen if e.seq > second.seq]
        assert before == [("started", "running")]  # the first run's, before the reload acted
        assert after[0] == ("stopping", "stopping") and after[-1] == ("started", "running")
        assert [e.seq for e in recent] == [e.seq for e in seen]  # the unit's memory agrees

    asyncio.run(asyncio.wait_for(main(), 30))

    asyncio.run(asyncio.wait_for(main(), 30))


def test_events_say_a_file_was_fixed_and_a_unit_removed(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        loader = FakeLoader()
        config = DaemonConfig(units_dir=tmp_path, log_dir=tmp_path / "log")
        seen: list[tuple[str, str]] = []
        async with Reconciler(config, rig.host, loader, rig.store) as rec:

            async def consume() -> None:
                async for event in rec.events():
                    seen.append((event.unit, event.event))

            async def until_seen(unit: str, event: str) -> None:
                while (unit, event) not in seen:
                    await asyncio.sleep(0.02)

            consumer = asyncio.create_task(consume())
            await asyncio.sleep(0)
            loader.load.specs = {"a": make_spec("a")}
            loader.load.errors = {"zz": ["zz.toml: service.exec: required key is missing"]}
            await rec.reload()
            await rec.start("a")
            loader.load.errors = {"a": ["a.toml: service.exec: required key is missing"]}
            broken = await rec.reload()  # a keeps running with its error; zz's file is gone
            # zz never ran: nothing was stopped, it was removed
            assert (broken.removed, broken.stopped, broken.fixed) == (["zz"], [], [])
            await asyncio.wait_for(until_seen("zz", "removed"), 10)  # its task's last word
            loader.load.errors = {}
            fixed = await rec.reload()  # a's file fixed, back to the version that runs
            assert fixed.fixed == ["a"] and fixed.unchanged == ["a"] and fixed.ok
            assert (await rec.reload()).fixed == []  # said once
            loader.load.specs = {}
            gone = await rec.reload()  # a's file removed
            assert (gone.stopped, gone.removed) == (["a"], [])
            await asyncio.wait_for(until_seen("a", "removed"), 60)
            consumer.cancel()
            await rec.shutdown(leave=False)
        assert seen == [
            ("zz", "invalid"),
            ("a", "started"),
            ("a", "invalid"),
            ("zz", "removed"),
            ("a", "valid"),
            ("a", "stopping"),
            ("a", "exited"),
            ("a", "stopped"),
            ("a", "removed"),
        ]

    asyncio.run(asyncio.wait_for(main(), 30))


def test_list_view_reads_less_and_shows_the_same(tmp_path: Path) -> None:
    async def main() -> None:
        # A clock that stands still: the three views are read at different moments, and
        # `uptime` must not differ between them because the machine was slow.
        rig = make_rig(tmp_path, ManualClock())
        loader = FakeLoader()
        config = DaemonConfig(units_dir=tmp_path, state_dir=tmp_path / "state",
                              log_dir=tmp_path / "log")  # fmt: skip
        loader.load.specs = {"web": make_spec("web")}
        async with Reconciler(config, rig.host, loader, rig.store) as rec:
            await rec.reload()
            await rec.start("web")
            (summary,) = rec.list_units()
            (full,) = rec.list_units(detail=True)
            detail = rec.get_unit("web")
            # The list's fields agree; only the detail view pays for usage and limits.
            assert summary.to_json() == full.to_json() == detail.to_json()
            assert summary.memory_bytes == 1 << 20
            assert summary.usage == {} and summary.limits == {} and summary.extra == {}
            assert full.to_json(detail=True) == detail.to_json(detail=True)
            assert full.usage["pids"] == 1 and "cpu_usage_usec" in full.usage
            await rec.shutdown(leave=False)

    asyncio.run(main())


def test_the_list_view_is_the_status_list_as_json_in_every_state(tmp_path: Path) -> None:
    """GET /v1/units builds its rows as dicts (status.list_row); they are, key for key, what
    the UnitStatus views say: running, stopped, in backoff, invalid, and running an earlier
    valid version of a file that is invalid now."""

    async def main() -> None:
        clock = ManualClock()  # uptime and next_start_in stand still
        rig = make_rig(tmp_path, clock)
        loader = FakeLoader()
        config = DaemonConfig(units_dir=tmp_path, state_dir=tmp_path / "state",
                              log_dir=tmp_path / "log")  # fmt: skip
        loader.load.specs = {
            "web": make_spec("web"),
            "manual": make_spec("manual", service={"autostart": False}),
            "crash": make_spec("crash", script="exit 1", restart={"delay": "30s"}),
        }
        loader.load.errors = {"bad": ["bad.toml: service.exec: field required"]}
        async with Reconciler(config, rig.host, loader, rig.store) as rec:
            await rec.reload()
            await rec.start("web")
            crash = rec.runners["crash"]
            await until(crash, lambda: crash.state is State.BACKOFF)

            def views() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
                return rec.list_view(), [u.to_json() for u in rec.list_units()]

            direct, via_status = views()
            assert direct == via_status
            # GET /v1/units' body, its rows' text kept between requests: what json.dumps
            # writes, byte for byte, also the second time (from the kept text).
            assert rec.list_text() == rec.list_text() == json.dumps({"units": direct})
            states = {row["name"]: row["state"] for row in direct}
            assert states == {"bad": "invalid", "crash": "backoff", "manual": "stopped",
                              "web": "running"}  # fmt: skip
            assert [row["name"] for row in direct] == sorted(states)
            del loader.load.specs["web"]
            loader.load.errors["web"] = ["web.toml: service.exec: field required"]
            await rec.reload()
            direct, via_status = views()
            assert direct == via_status
            assert next(row for row in direct if row["name"] == "web")["file_invalid"] is True
            # web's kept text was made when its file was valid: a changed row is made again.
            assert rec.list_text() == json.dumps({"units": direct})
            clock.advance(2.5)  # uptime and next_start_in move, the rest stays
            direct, _ = views()
            assert rec.list_text() == json.dumps({"units": direct})
            await rec.shutdown(leave=False)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_kept_row_follows_every_value_of_its_unit(tmp_path: Path) -> None:
    """The list view's kept rows (status.ListText) are used while the values they were made
    from are the same: whichever of a row's values changes, by whatever code, the next list
    is again json.dumps of the rows as they are now, byte for byte."""

    async def main() -> None:
        clock = ManualClock()
        rig = make_rig(tmp_path, clock)
        loader = FakeLoader()
        config = DaemonConfig(units_dir=tmp_path, state_dir=tmp_path / "state",
                              log_dir=tmp_path / "log")  # fmt: skip
        manual_spec = make_spec("manual", service={"autostart": False})
        loader.load.specs = {"web": make_spec("web"), "manual": manual_spec}
        async with Reconciler(config, rig.host, loader, rig.store) as rec:
            await rec.reload()
            await rec.start("web")
            web, manual = rec.runners["web"], rec.runners["manual"]

            def agrees() -> None:
                assert rec.list_text() == json.dumps({"units": rec.list_view()})

            agrees()
            changes: list[Callable[[], object]] = [
                lambda: setattr(web, "restarts", 3),
                lambda: setattr(web, "last_exit", "exit status 1"),
                lambda: setattr(web, "oom_kills", 2),
                lambda: setattr(web, "error", "not ready within 5s (start_timeout)"),
                lambda: setattr(web, "error", None),
                lambda: setattr(web.health, "state", HealthState.UNHEALTHY),
                lambda: setattr(web, "waiting_for", "waits for db"),
                lambda: setattr(web, "waiting_for", None),
                lambda: web.set_invalid(["web.toml: service.exec: field required"]),
                lambda: web.set_invalid([]),
                lambda: setattr(manual, "spec", make_spec("manual", network={"mode": "host"})),
                # An equal spec that is another object: the row is made again from it.
                lambda: setattr(manual, "spec", replace(manual.spec)),
                lambda: setattr(manual, "state", State.FAILED),
                lambda: clock.advance(1.5),
                # Memory is read at every request, through the reader kept with the row.
                lambda: setattr(web.run.cgroup, "memory", 5 << 20),
                lambda: setattr(web.run.cgroup, "memory", None),
                lambda: setattr(web.run.cgroup, "memory", 3 << 20),
            ]
            for change in changes:
                change()
                agrees()
            rows = json.loads(rec.list_text())["units"]
            memory = [row["memory_bytes"] for row in rows if row["name"] == "web"]
            assert memory == [3 << 20]
            await rec.shutdown(leave=False)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_reload_logs_the_host_check_warnings(tmp_path: Path) -> None:
    async def main() -> list[dict[str, Any]]:
        rig = make_rig(tmp_path)
        loader = FakeLoader()
        loader.load.specs = {"a": make_spec("a", service={"autostart": False})}
        loader.load.warnings = {"a": ["a.toml: service.user: warning: unknown user 'app'"]}
        config = DaemonConfig(units_dir=tmp_path, log_dir=tmp_path / "log")
        async with Reconciler(config, rig.host, loader, rig.store) as rec:
            with capture_logs() as events:
                result = await rec.reload()
            assert result.deferred == ["a"], "a warning does not block the unit"
            await rec.shutdown(leave=False)
        return events

    events = asyncio.run(asyncio.wait_for(main(), 30))
    assert [e for e in events if e["event"] == "unit.warning"] == [
        {
            "event": "unit.warning",
            "log_level": "warning",
            "unit": "a",
            "problem": "a.toml: service.user: warning: unknown user 'app'",
        }
    ]


def test_top_frame_and_start_restart_timings(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        loader = FakeLoader()
        config = DaemonConfig(units_dir=tmp_path, state_dir=tmp_path / "state",
                              log_dir=tmp_path / "log")  # fmt: skip
        flag = tmp_path / "crashed-once"
        loader.load.specs = {
            "web": make_spec("web", resources={"memory_max": "64M"}),
            "crash": make_spec("crash", f"[ -e {flag} ] && exec sleep 100; touch {flag}; exit 1",
                               restart={"delay": "10ms"}),
            "manual": make_spec("manual", service={"autostart": False}),
        }  # fmt: skip
        timings: list[tuple[str, float]] = []
        async with Reconciler(config, rig.host, loader, rig.store) as rec:
            rec.timing_observers.append(lambda kind, seconds: timings.append((kind, seconds)))
            await rec.reload()
            crash = rec.runners["crash"]
            await until(crash, lambda: crash.restarts == 1 and crash.state is State.RUNNING)
            await rec.start("web")
            frame = rec.top()
            rows = {row["name"]: row for row in frame.to_json()["units"]}
            assert list(rows) == ["crash", "manual", "web"]
            assert rows["web"]["memory_max"] == 64 << 20
            assert rows["web"]["memory_bytes"] == 1 << 20 and rows["web"]["pids"] == 1
            assert rows["manual"]["state"] == "stopped" and rows["manual"]["memory_bytes"] is None
            assert rows["crash"]["restarts"] == 1
            kinds = [kind for kind, _ in timings]
            assert kinds.count("start") == 3 and kinds.count("restart") == 1
            assert all(seconds >= 0 for _, seconds in timings)
            restart = next(s for k, s in timings if k == "restart")
            assert restart >= 0.01  # the [restart] delay is part of it
            await rec.shutdown(leave=False)

    asyncio.run(asyncio.wait_for(main(), 60))
