"""Transient units in the reconciler with fake cgroups and launcher (no root): made through
`create`, validated as a file, kept by reload, removed on exit with `remove`, refused names;
the store's files forget another boot's units."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from engine_fakes import make_rig, make_spec
from test_ordering import Loader

from supervisor.config import DaemonConfig
from supervisor.engine.reconciler import Reconciler
from supervisor.engine.transient import TransientError, TransientUnits, merge
from supervisor.errors import InvalidUnit
from supervisor.unit import checks

SLEEP = {"service": {"exec": ["/bin/sh", "-c", "sleep 100"], "stop_timeout": "1s"}}


def _config(tmp_path: Path) -> DaemonConfig:
    return DaemonConfig(units_dir=tmp_path / "units", state_dir=tmp_path / "state",
                        log_dir=tmp_path / "log")  # fmt: skip


def test_create_runs_keeps_and_deletes(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        config = _config(tmp_path)
        loader = Loader({"web": make_spec("web")})
        async with Reconciler(config, rig.host, loader, rig.store) as rec:
            await rec.reload()
            seq, unit = await rec.create("job", SLEEP, remove=False)
            assert unit.state == "running" and seq >= 0
            assert (config.state_dir / "transient" / "job.toml").exists()
            result = await rec.reload()
            assert "job" in result.unchanged and rec.runners["job"].launches == 1
            with pytest.raises(TransientError, match="a unit named web exists already"):
                await rec.create("web", SLEEP, remove=False)
            with pytest.raises(TransientError, match="not a transient unit"):
                await rec.delete("web")
            await rec.delete("job")
            assert "job" not in rec.runners
            assert not list((config.state_dir / "transient").iterdir())
            await rec.shutdown(leave=False)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_an_invalid_unit_is_refused_naming_the_key(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        async with Reconciler(_config(tmp_path), rig.host, Loader({}), rig.store) as rec:
            bad = {**SLEEP, "resources": {"memry_max": "64M"}}
            with pytest.raises(InvalidUnit) as info:
                await rec.create(None, bad, remove=False)
            assert info.value.errors == [
                'resources.memry_max: unknown key (did you mean "memory_max"?)'
            ]
            with pytest.raises(InvalidUnit, match="service: must be a table"):
                await rec.create(None, {"service": "x"}, remove=False)
            # A cross-unit error (a dependency that does not exist) leaves nothing behind.
            needs = {"service": {**SLEEP["service"], "requires": ["db"]}}
            with pytest.raises(TransientError, match='no unit named "db"'):
                await rec.create("app", needs, remove=False)
            assert rec.runners == {} and rec.transient.names() == set()
            await rec.shutdown(leave=False)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_pressure_limit_without_psi_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checks, "detect_version", lambda: 1)  # a cgroup v1 host

    async def main() -> None:
        rig = make_rig(tmp_path)
        async with Reconciler(_config(tmp_path), rig.host, Loader({}), rig.store) as rec:
            limited = {**SLEEP, "oom": {"pressure_limit": "memory.full.avg10 > 40"}}
            with pytest.raises(InvalidUnit) as info:
                await rec.create("job", limited, remove=False)
            [error] = info.value.errors
            assert error.startswith("oom.pressure_limit: needs cgroup v2 pressure (PSI) files")
            assert rec.runners == {} and rec.transient.names() == set()
            await rec.shutdown(leave=False)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_remove_on_exit(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path)
        async with Reconciler(_config(tmp_path), rig.host, Loader({}), rig.store) as rec:
            removed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

            async def consume() -> None:  # subscribed before the unit exists: misses nothing
                async for event in rec.events():
                    if event.event == "removed":
                        removed.set_result(event.unit)
                        return

            consumer = asyncio.create_task(consume())
            await asyncio.sleep(0)
            once = {"service": {"exec": ["/bin/sh", "-c", "exit 3"]}, "restart": {"policy": "no"}}
            _seq, unit = await rec.create(None, once, remove=True)
            name = await removed
            await consumer
            assert name == unit.name and name not in rec.runners
            assert rec.transient.names() == set()
            await rec.shutdown(leave=False)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_files_of_another_boot_and_half_made_ones_are_forgotten(tmp_path: Path) -> None:
    units = TransientUnits(tmp_path)
    units.create("now", SLEEP, remove=True)
    units.create("old", SLEEP, remove=False)
    meta = json.loads((tmp_path / "old.json").read_text())
    (tmp_path / "old.json").write_text(json.dumps({**meta, "boot_id": "another boot"}))
    (tmp_path / "half.toml").write_text((tmp_path / "now.toml").read_text())
    specs, errors = units.load()
    assert list(specs) == ["now"] and not errors
    assert units.removes_on_exit("now") and not units.removes_on_exit("old")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["now.json", "now.toml"]


def test_a_later_file_with_a_transient_units_name_is_ignored(tmp_path: Path) -> None:
    units = TransientUnits(tmp_path)
    units.create("job", SLEEP, remove=False)
    t_specs, t_errors = units.load()
    files = {"job": make_spec("job"), "web": make_spec("web")}
    specs, errors, shadowed = merge(files, {}, t_specs, t_errors)
    assert shadowed == ["job"] and not errors
    assert specs["job"].path == str(tmp_path / "job.toml") and specs["web"] is files["web"]


def test_reload_reuses_unchanged_transient_units_and_forgets_deleted_ones(
    tmp_path: Path,
) -> None:
    units = TransientUnits(tmp_path)
    units.create("keep", SLEEP, remove=False)
    units.create("gone", SLEEP, remove=True)
    first, _ = units.load()
    again, _ = units.load()
    assert again["keep"] is first["keep"]  # not parsed again
    units.delete("gone")
    assert list(units.load()[0]) == ["keep"]
    assert units._loader._cache.keys() == {str(units.path("keep"))}
