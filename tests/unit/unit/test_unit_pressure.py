"""`[oom] pressure_limit`, `pressure_action`, `pressure_duration`: the expression language, its
errors as file:key lines, and the host check that refuses it where no PSI is kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from supervisor.unit import checks
from supervisor.unit.loader import UnitLoader
from supervisor.unit.pressure import PressureLimit, parse_pressure_action, parse_pressure_limit
from supervisor.unit.schema import UnitFile
from supervisor.unit.spec import UnitSpec

UNIT = '[service]\nexec = ["/bin/true"]\n\n[oom]\npressure_limit = "{limit}"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("memory.full.avg10 > 40", PressureLimit("memory", "full", "avg10", 40.0)),
        ("memory.some.avg60>12.5", PressureLimit("memory", "some", "avg60", 12.5)),
        ("  IO.Some.AVG10 >  0 ", PressureLimit("io", "some", "avg10", 0.0)),
        ("cpu.full.avg10 > 99.9", PressureLimit("cpu", "full", "avg10", 99.9)),
    ],
)
def test_limits_parse_and_print_canonically(text: str, expected: PressureLimit) -> None:
    limit = parse_pressure_limit(text)
    assert limit == expected
    assert parse_pressure_limit(str(limit)) == limit  # the spelling the spec hash uses


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("memory.full.avg10", "is not of the form"),
        ("", "is not of the form"),
        ("mem.full.avg10 > 40", "unknown resource 'mem'"),
        ("memory.half.avg10 > 40", "unknown kind 'half'"),
        ("memory.full.avg300 > 40", "unknown window 'avg300'"),
        ("memory.full.avg10 >= 40", 'the only comparison is ">"'),
        ("memory.full.avg10 < 40", 'the only comparison is ">"'),
        ("memory.full.avg10 > 100", "from 0 to below 100"),
        ("memory.full.avg10 > -1", "not a percentage"),
        ("memory.full.avg10 > 40%", "not a percentage"),
        ("memory.full.avg10 > 1e3", "not a percentage"),
    ],
)
def test_bad_limits_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_pressure_limit(text)
    assert says in str(info.value)


def test_a_limit_is_a_string() -> None:
    with pytest.raises(ValueError, match="expected a string"):
        parse_pressure_limit(40)


@pytest.mark.parametrize(
    ("text", "action"),
    [("restart", "restart"), ("stop", "stop"), ("signal:SIGUSR1", "signal:SIGUSR1"),
     ("signal:usr2", "signal:SIGUSR2"), ("signal:10", "signal:SIGUSR1")],
)  # fmt: skip
def test_actions(text: str, action: str) -> None:
    assert parse_pressure_action(text) == action


@pytest.mark.parametrize("text", ["kill", "signal:", "signal:SIGKILL", "signal:NOPE", "Restart"])
def test_bad_actions(text: str) -> None:
    with pytest.raises(ValueError, match=r"signal|restart"):
        parse_pressure_action(text)


def test_the_oom_section_defaults_and_round_trips() -> None:
    oom = UnitFile.model_validate(
        {"service": {"exec": ["/bin/true"]}, "oom": {"pressure_limit": "memory.full.avg10>40"}}
    ).oom
    assert oom.pressure_action == "restart" and oom.pressure_duration == 10.0
    dumped = oom.model_dump(mode="json")
    assert dumped["pressure_limit"] == "memory.full.avg10 > 40"
    assert dumped["pressure_duration"] == "10s"


@pytest.mark.parametrize("key", ["pressure_action", "pressure_duration"])
def test_the_other_keys_need_a_limit(key: str) -> None:
    value = "stop" if key == "pressure_action" else "5s"
    with pytest.raises(ValidationError, match=f"{key} is only used with pressure_limit"):
        UnitFile.model_validate({"service": {"exec": ["/bin/true"]}, "oom": {key: value}})


def test_a_bad_limit_is_a_file_key_error(tmp_path: Path) -> None:
    (tmp_path / "web.toml").write_text(UNIT.format(limit="memory.full.avg10 >= 40"))
    load = UnitLoader(host_checks=False).load_directory(tmp_path)
    [error] = load.errors["web"]
    assert error.key == "oom.pressure_limit" and error.line == 5
    assert 'the only comparison is ">"' in error.message


def _spec(limit: str = "memory.full.avg10 > 40") -> UnitSpec:
    unit = UnitFile.model_validate(
        {"service": {"exec": ["/bin/true"]}, "oom": {"pressure_limit": limit}}
    )
    return UnitSpec(name="web", path="/x/web.toml", unit=unit)


def test_cgroup_v1_refuses_a_pressure_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "detect_version", lambda: 1)
    [error] = checks.host_errors(_spec())
    assert error.key == "oom.pressure_limit"
    assert error.message.startswith("needs cgroup v2 pressure (PSI) files: ")
    assert "v1" in error.message


def test_a_kernel_without_psi_refuses_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(checks, "detect_version", lambda: 2)
    monkeypatch.setattr(checks, "PROC_PRESSURE", str(tmp_path))
    [error] = checks.host_errors(_spec("io.some.avg60 > 5"))
    assert f"{tmp_path}/io is missing" in error.message
    (tmp_path / "io").write_text("")
    assert checks.host_errors(_spec("io.some.avg60 > 5")) == []


def test_the_daemons_load_refuses_it_on_v1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(checks, "detect_version", lambda: 1)
    (tmp_path / "web.toml").write_text(UNIT.format(limit="memory.full.avg10 > 40"))
    (tmp_path / "plain.toml").write_text('[service]\nexec = ["/bin/true"]\n')
    load = UnitLoader().load_directory(tmp_path)
    assert list(load.specs) == ["plain"]
    [error] = load.errors["web"]
    assert (error.key, error.line) == ("oom.pressure_limit", 5)
    # Offline (validate --no-host-checks) the unit is fine: it may be for another host.
    assert "web" in UnitLoader(host_checks=False).load_directory(tmp_path).specs
