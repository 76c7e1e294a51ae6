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
