"""`after` in the reconciler with fake cgroups and launcher (no root): a dependent waits in
starting (with the reason) and launches by itself once its dependency runs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from engine_fakes import make_rig, make_spec

from supervisor.config import DaemonConfig
from supervisor.engine.reconciler import Reconciler
from supervisor.unit.spec import UnitSpec


@dataclass
class Load:
    specs: dict[str, UnitSpec] = field(default_factory=dict)
    errors: dict[str, list[object]] = field(default_factory=dict)
    warnings: dict[str, list[object]] = field(default_factory=dict)
    template_errors: dict[str, list[object]] = field(default_factory=dict)


class Loader:
    def __init__(self, specs: dict[str, UnitSpec]) -> None:
        self.load = Load(specs)

    def load_directory(self, directory: Path) -> Load:
        return self.load


def test_dependent_waits_then_follows(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        config = DaemonConfig(units_dir=tmp_path, state_dir=tmp_path / "state",
                              log_dir=tmp_path / "log")  # fmt: skip
        specs = {
            "db": make_spec("db", service={"autostart": False}),
            "app": make_spec("app", service={"after": ["db"]}),
        }
        async with Reconciler(config, rig.host, Loader(specs), rig.store) as rec:
            await rec.reload()
            app = rec.runners["app"]
            await asyncio.wait_for(app.wait(lambda: app.waiting_for is not None), 60)
            status = rec.get_unit("app")
            assert status.state == "starting" and status.pid is None
            assert status.error == "waiting for db (stopped)"
            assert (await rec.start("app")).state == "starting"  # answers, does not hang
            await rec.start("db")
            await asyncio.wait_for(app.wait(lambda: app.state.value == "running"), 60)
            assert rec.get_unit("app").error is None and app.launches == 1
            await rec.shutdown(leave=False)

    asyncio.run(asyncio.wait_for(main(), 20))


def _config(tmp_path: Path) -> DaemonConfig:
    return DaemonConfig(units_dir=tmp_path, state_dir=tmp_path / "state", log_dir=tmp_path / "log")


def test_requires_stops_with_its_dependency_and_comes_back(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        specs = {
            "db": make_spec("db"),
            "app": make_spec("app", service={"requires": ["db"]}),
            "api": make_spec("api", service={"requires": ["app"]}),  # down the chain too
        }
        async with Reconciler(_config(tmp_path), rig.host, Loader(specs), rig.store) as rec:
            await rec.reload()
            app, api = rec.runners["app"], rec.runners["api"]
            await asyncio.wait_for(api.wait(lambda: api.state.value == "running"), 60)
            status = rec.get_unit("db").to_json(detail=True)
            assert status["required_by"] == ["app"] and status["wanted_by"] == []
            assert rec.get_unit("app").to_json(detail=True)["requires"] == ["db"]
            await rec.stop("db")
            await asyncio.wait_for(app.wait(lambda: app.waiting_for is not None), 60)
            assert app.run is None and rec.get_unit("app").error == "waiting for db (stopped)"
            await asyncio.wait_for(api.wait(lambda: api.waiting_for is not None), 60)
            assert [e.detail for e in app.recent_events if e.event == "dependency_down"] == [
                {"dependency": "db", "dependency_state": "stopping"}
            ]
            await rec.start("db")
            await asyncio.wait_for(api.wait(lambda: api.state.value == "running"), 60)
            assert app.state.value == "running" and app.launches == 2 and api.launches == 2
            assert app.restarts == 0  # not the unit's own failure
            await rec.shutdown(leave=False)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_wants_orders_without_binding(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        specs = {"db": make_spec("db"), "app": make_spec("app", service={"wants": ["db"]})}
        async with Reconciler(_config(tmp_path), rig.host, Loader(specs), rig.store) as rec:
            await rec.reload()
            app = rec.runners["app"]
            await asyncio.wait_for(app.wait(lambda: app.state.value == "running"), 60)
            assert rec.get_unit("db").to_json(detail=True)["wanted_by"] == ["app"]
            await rec.stop("db")
            await asyncio.wait_for(app.wait(lambda: app.idle), 60)
            assert app.state.value == "running" and app.launches == 1
            await rec.shutdown(leave=False)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_start_pulls_in_what_it_requires_and_wants(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        off = {"autostart": False}
        specs = {
            "db": make_spec("db", service=off),
            "cache": make_spec("cache", service=off),
            "unrelated": make_spec("unrelated", service=off),
            "app": make_spec("app", service={"requires": ["db"], "wants": ["cache"]}),
        }
        async with Reconciler(_config(tmp_path), rig.host, Loader(specs), rig.store) as rec:
            result = await rec.reload()
            assert sorted(result.started) == ["app", "cache", "db"]
            app = rec.runners["app"]
            await asyncio.wait_for(app.wait(lambda: app.state.value == "running"), 60)
            assert rec.runners["unrelated"].state.value == "stopped"
            await rec.stop("app")
            await rec.stop("db")
            assert (await rec.start("app")).state in ("starting", "running")
            await asyncio.wait_for(app.wait(lambda: app.state.value == "running"), 60)
            assert rec.runners["db"].state.value == "running"
            await rec.shutdown(leave=False)

    asyncio.run(asyncio.wait_for(main(), 30))
