"""Desired units x actual runners → actions. Pure: no I/O, no clock, table-tested.

Reload semantics (README, "Unit files"): new → start (if autostart); removed → stop; changed →
restart with the new spec, except a change confined to `[resources]`, which is applied live to
the cgroup; unchanged → untouched; invalid → the running version keeps running and the unit
reports the error.

Two refinements the contract leaves open, decided here once:
* a changed unit that an operator stopped stays stopped (it takes the new spec for its next
  start): reload must not undo an explicit `sandboxctl stop`;
* a changed unit that is `exited` or `failed` gets a fresh run if it is autostart, with its
  restart counters reset: editing the file is how one fixes a failing unit.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import NamedTuple

from supervisor.contract import State
from supervisor.unit.spec import UnitSpec


class Kind(enum.Enum):
    START = "start"  # new (or newly valid) autostart unit
    ADD = "add"  # new unit without autostart: known, not started
    STOP = "stop"  # its file is gone: stop it and forget it
    RESTART = "restart"  # changed: end the old run, start the new spec
    REPLACE = "replace"  # changed but not to be started now: keep the new spec for later
    UPDATE_LIVE = "update-live"  # only [resources] changed: write the limits, no restart
    KEEP = "keep"  # unchanged
    INVALID_KEEPS_RUNNING = "invalid-keeps-running"  # bad edit; the earlier version stays
    INVALID = "invalid"  # bad file and no earlier version


class Actual(NamedTuple):
    """What the reconciler knows of a unit it already has (a tuple: one is made per unit at
    every reload, and a frozen dataclass cost three times as much to build)."""

    hash: str | None  # None: the unit has never had a valid spec
    restart_hash: str | None
    state: State


@dataclass(frozen=True)
class Action:
    kind: Kind
    name: str
    spec: UnitSpec | None = None
    errors: Sequence[str] = field(default_factory=tuple)


# A changed unit in these states has a run (or a pending one) that reload must replace.
_LIVE = frozenset({State.STARTING, State.RUNNING, State.BACKOFF})
# A changed unit in these states gets a fresh run when autostart.
_RETRY = frozenset({State.EXITED, State.FAILED})


def _changed(spec: UnitSpec, actual: Actual) -> Kind:
    """A unit whose hash differs (an equal one is kept: `changes`)."""
    if actual.restart_hash == spec.restart_hash:
        return Kind.UPDATE_LIVE
    if actual.state in _LIVE:
        return Kind.RESTART
    if actual.state in _RETRY and spec.unit.service.autostart:
        return Kind.RESTART
    return Kind.REPLACE


def plan(
    specs: Mapping[str, UnitSpec],
    errors: Mapping[str, Sequence[str]],
    actual: Mapping[str, Actual],
) -> list[Action]:
    """One action per unit in any of the three inputs, sorted by name."""
    actions, kept = changes(specs, errors, actual)
    actions.extend(Action(Kind.KEEP, name, specs[name]) for name in kept)
    return sorted(actions, key=lambda action: action.name)


def changes(
    specs: Mapping[str, UnitSpec],
    errors: Mapping[str, Sequence[str]],
    actual: Mapping[str, Actual],
    same: Set[str] = frozenset(),
) -> tuple[list[Action], list[str]]:
    """`plan` in two parts, each sorted by name: the actions other than KEEP, and the names of
    the units to keep. A reload of 5000 units with one change makes one Action, not 5000
    (issue 23: a reload costs what changed). `same`: units of `specs` the caller knows are
    kept (their runner has that very spec object, valid: the reconciler's diff by identity),
    so neither compared nor listed in `kept`; `actual` need not have them."""
    actions: list[Action] = []
    kept: list[str] = []
    for name in sorted((specs.keys() - same) | errors.keys() | actual.keys()):
        have = actual.get(name)
        spec = specs.get(name)
        if spec is not None and have is not None and have.hash == spec.hash and name not in errors:
            kept.append(name)  # the common case, first: _changed's KEEP
            continue
        if name in errors:
            kind = Kind.INVALID_KEEPS_RUNNING if have and have.hash else Kind.INVALID
            actions.append(Action(kind, name, errors=tuple(errors[name])))
        elif spec is not None:
            if have is None or have.hash is None:
                kind = Kind.START if spec.unit.service.autostart else Kind.ADD
            else:
                kind = _changed(spec, have)
            actions.append(Action(kind, name, spec))
        else:
            actions.append(Action(Kind.STOP, name))
    return actions, kept
