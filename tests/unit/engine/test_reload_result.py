"""ReloadResult.to_json is built field by field (not `asdict`, which deep-copies each of 5000
unchanged names): the same answer, and no list shared with the result."""

from __future__ import annotations

from dataclasses import asdict

from supervisor.engine.model import ReloadResult


def test_to_json_is_asdict_and_ok() -> None:
    result = ReloadResult(
        started=["a"], restarted=["b"], updated=["c"], stopped=["d"], unchanged=["e", "f"],
        invalid={"g": ["g.toml:1: x"]}, deferred=["h"], removed=["i"], fixed=["f"], seq=7,
    )  # fmt: skip
    assert result.to_json() == {**asdict(result), "ok": False}
    assert ReloadResult().to_json() == {**asdict(ReloadResult()), "ok": True}


def test_to_json_copies_the_lists() -> None:
    result = ReloadResult(unchanged=["a"], invalid={"b": ["x"]})
    out = result.to_json()
    out["unchanged"].append("z")
    out["invalid"]["b"].append("y")
    assert result.unchanged == ["a"] and result.invalid == {"b": ["x"]}
