"""Reload semantics as a table: (desired, actual) -> action."""

from __future__ import annotations

from typing import Any

import pytest

from supervisor.contract import State
from supervisor.engine.diff import Actual, Kind, changes, plan
from supervisor.unit.schema import UnitFile
from supervisor.unit.spec import UnitSpec


def spec(name: str = "web", **sections: Any) -> UnitSpec:
    data: dict[str, Any] = {"service": {"exec": ["/bin/sleep", "100"]}}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return UnitSpec(name, f"/units/{name}.toml", UnitFile.model_validate(data))


BASE = spec()
LIVE = spec(resources={"memory_max": "64M"})
CHANGED = spec(service={"exec": ["/bin/sleep", "200"]})
MANUAL = spec(service={"exec": ["/bin/sleep", "200"], "autostart": False})


def actual(s: UnitSpec | None, state: State) -> Actual:
    return Actual(s.hash if s else None, s.restart_hash if s else None, state)


def test_resource_only_change_keeps_restart_hash() -> None:
    assert LIVE.hash != BASE.hash and LIVE.restart_hash == BASE.restart_hash
    assert CHANGED.restart_hash != BASE.restart_hash


@pytest.mark.parametrize(
    ("desired", "errors", "have", "kind"),
    [
        # new
        (BASE, None, None, Kind.START),
        (spec(service={"exec": ["/bin/true"], "autostart": False}), None, None, Kind.ADD),
        # removed
        (None, None, actual(BASE, State.RUNNING), Kind.STOP),
        (None, None, actual(BASE, State.EXITED), Kind.STOP),
        (None, None, actual(None, State.INVALID), Kind.STOP),
        # unchanged, whatever the state
        (BASE, None, actual(BASE, State.RUNNING), Kind.KEEP),
        (BASE, None, actual(BASE, State.FAILED), Kind.KEEP),
        (BASE, None, actual(BASE, State.STOPPED), Kind.KEEP),
        # resource-only change: live, whatever the state
        (LIVE, None, actual(BASE, State.RUNNING), Kind.UPDATE_LIVE),
        (LIVE, None, actual(BASE, State.STOPPED), Kind.UPDATE_LIVE),
        # real change
        (CHANGED, None, actual(BASE, State.RUNNING), Kind.RESTART),
        (CHANGED, None, actual(BASE, State.STARTING), Kind.RESTART),
        (CHANGED, None, actual(BASE, State.BACKOFF), Kind.RESTART),
        (CHANGED, None, actual(BASE, State.FAILED), Kind.RESTART),
        (CHANGED, None, actual(BASE, State.EXITED), Kind.RESTART),
        (CHANGED, None, actual(BASE, State.STOPPED), Kind.REPLACE),
        (CHANGED, None, actual(BASE, State.STOPPING), Kind.REPLACE),
        (MANUAL, None, actual(BASE, State.EXITED), Kind.REPLACE),
        (MANUAL, None, actual(BASE, State.RUNNING), Kind.RESTART),
        # invalid
        (None, ["web.toml: service.exec: field required"], None, Kind.INVALID),
        (None, ["x"], actual(None, State.INVALID), Kind.INVALID),
        (None, ["x"], actual(BASE, State.RUNNING), Kind.INVALID_KEEPS_RUNNING),
        (None, ["x"], actual(BASE, State.STOPPED), Kind.INVALID_KEEPS_RUNNING),
        # fixed after being invalid
        (BASE, None, actual(None, State.INVALID), Kind.START),
    ],
)
def test_plan_table(
    desired: UnitSpec | None, errors: list[str] | None, have: Actual | None, kind: Kind
) -> None:
    actions = plan(
        {"web": desired} if desired else {},
        {"web": errors} if errors else {},
        {"web": have} if have else {},
    )
    assert [(a.name, a.kind) for a in actions] == [("web", kind)]
    if errors:
        assert list(actions[0].errors) == errors
    if desired:
        assert actions[0].spec is desired


def test_only_the_changed_unit_is_touched() -> None:
    specs = {f"u{i}": spec(f"u{i}") for i in range(50)}
    have = {n: actual(s, State.RUNNING) for n, s in specs.items()}
    specs["u7"] = spec("u7", service={"exec": ["/bin/true"]})
    touched = [a for a in plan(specs, {}, have) if a.kind is not Kind.KEEP]
    assert [(a.name, a.kind) for a in touched] == [("u7", Kind.RESTART)]


def test_changes_is_the_plan_with_its_kept_units_apart() -> None:
    """What the reconciler uses (one Action per change, the kept units by name) says what
    `plan` says, for every kind at once."""
    specs = {"keep": spec("keep"), "live": LIVE, "changed": CHANGED, "new": spec("new"),
             "fixed": spec("fixed"), "bad": spec("bad")}  # fmt: skip
    have = {
        "keep": actual(spec("keep"), State.RUNNING),
        "live": actual(BASE, State.RUNNING),
        "changed": actual(BASE, State.STOPPED),
        "fixed": actual(spec("fixed"), State.RUNNING),
        "bad": actual(spec("bad"), State.RUNNING),
        "gone": actual(BASE, State.RUNNING),
    }
    errors = {"bad": ["broken"], "worse": ["broken too"]}
    actions, kept = changes(specs, errors, have)
    whole = plan(specs, errors, have)
    assert kept == [a.name for a in whole if a.kind is Kind.KEEP] == ["fixed", "keep"]
    assert actions == [a for a in whole if a.kind is not Kind.KEEP]
    assert [a.name for a in actions] == sorted(a.name for a in actions)
    assert {a.kind for a in actions} == {Kind.UPDATE_LIVE, Kind.REPLACE, Kind.START, Kind.STOP,
                                         Kind.INVALID_KEEPS_RUNNING, Kind.INVALID}  # fmt: skip


def test_units_known_the_same_are_neither_compared_nor_listed() -> None:
    """The reconciler's diff by identity: the units it names in `same` need no Actual and do
    not come back in `kept`; the rest are diffed as before."""
    specs = {f"u{i}": spec(f"u{i}") for i in range(5)}
    specs["u3"] = CHANGED
    have = {"u3": actual(BASE, State.RUNNING), "gone": actual(BASE, State.RUNNING)}
    actions, kept = changes(specs, {}, have, same={"u0", "u1", "u2", "u4"})
    assert kept == []
    assert [(a.name, a.kind) for a in actions] == [("gone", Kind.STOP), ("u3", Kind.RESTART)]
