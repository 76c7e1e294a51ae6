"""Which units may have their next run launched at an OOM kill, and how a begun launch is
taken for the restart or aborted (engine/prelaunch.py). The kernel side (a PID 1 waiting for
Go, the aborts) is tested on the real kernel: tests/integration/test_oom_prelaunch.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from supervisor.cgroups import Limits
from supervisor.engine import prelaunch
from supervisor.engine.restarttrace import OFF
from supervisor.engine.run import Begun
from supervisor.errors import CgroupError
from supervisor.unit.schema import UnitFile
from supervisor.unit.spec import UnitSpec
from tests.unit.engine.engine_fakes import FakeCgroup, make_rig, make_spec

DELAY_0 = {"restart": {"delay": "0"}}


@pytest.mark.parametrize(
    ("sections", "renames", "expected"),
    [
        (DELAY_0, True, True),
        (DELAY_0, False, False),  # cgroup2: no spare to launch into
        ({}, True, False),  # the default delay: nothing to gain
        ({"restart": {"delay": "0", "policy": "no"}}, True, False),
        ({**DELAY_0, "oom": {"policy": "stop"}}, True, False),
        ({**DELAY_0, "oom": {"policy": "continue"}}, True, False),
        ({**DELAY_0, "network": {"mode": "bridge"}}, True, False),
        ({**DELAY_0, "network": {"mode": "host"}}, True, True),
        ({**DELAY_0, "service": {"ready": "notify"}}, True, False),
        ({**DELAY_0, "service": {"watchdog": "5s"}}, True, False),
    ],
)
def test_eligible(sections: dict[str, Any], renames: bool, expected: bool) -> None:
    assert prelaunch.eligible(make_spec(**sections), renames) is expected


def test_a_unit_with_listen_sockets_is_not_eligible() -> None:
    spec = make_spec(**DELAY_0)
    listen = UnitFile.model_validate({"service": {"exec": ["/bin/true"]},
                                      "listen": [{"unix": "/run/x.sock"}]}).listen  # fmt: skip
    spec.unit.listen.extend(listen)
    assert not prelaunch.eligible(spec, True)


def _begun(tmp_path: Path, spec: UnitSpec) -> tuple[Begun, FakeCgroup, Any]:
    async def made() -> tuple[Begun, FakeCgroup, Any]:
        rig = make_rig(tmp_path)
        rig.manager.renames = True
        cgroup = rig.manager.create(".next.svc", Limits())
        return Begun(rig.host, spec, cgroup, OFF), cgroup, rig.manager

    return asyncio.run(made())


def test_take_renames_the_spare_to_the_unit(tmp_path: Path) -> None:
    spec = make_spec(**DELAY_0)
    begun, cgroup, manager = _begun(tmp_path, spec)
    taken = prelaunch.take(begun, spec, lambda cg: manager.rename(cg, "svc"))
    assert taken is begun and begun.cgroup.name == "svc" and not cgroup.destroyed


def test_take_aborts_a_launch_begun_for_another_spec(tmp_path: Path) -> None:
    begun, cgroup, _ = _begun(tmp_path, make_spec(**DELAY_0))
    changed = make_spec(**DELAY_0)  # a reload: another spec, even with the same text

    def rename(cg: FakeCgroup) -> FakeCgroup:
        raise AssertionError("a launch for another spec is never renamed")

    assert prelaunch.take(begun, changed, rename) is None
    assert cgroup.destroyed


def test_take_aborts_when_the_unit_name_is_still_taken(tmp_path: Path) -> None:
    spec = make_spec(**DELAY_0)
    begun, cgroup, _ = _begun(tmp_path, spec)

    def rename(cg: FakeCgroup) -> FakeCgroup:
        raise CgroupError("svc exists")

    assert prelaunch.take(begun, spec, rename) is None
    assert cgroup.destroyed
