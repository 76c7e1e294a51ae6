"""`after`, `requires` and `wants`: a unit starts only once each unit they name is running
and ready (and healthy, if it has `[health]`); `requires` also binds its run to theirs.

The rule is checked by the waiting unit itself, right before each launch (the first one and
every restart out of backoff), so a dependency that fails or restarts leaves its dependents
waiting in `starting` with the reason in words ("waiting for db (backoff)") instead of letting
them crash-loop against it. `after` and `wants` order starts, they do not bind lifetimes (as
systemd's After= and Wants=): dependents already running are left alone. A unit that
`requires` db is stopped when db leaves `running` (an operator's stop or restart, an exit, an
OOM kill, a failure) and started again, which waits for db like any start: so it is back once
db is, and meanwhile `status` says what it waits for. Cycles and unknown names never get here:
the loader rejects them (unit/loader.py).

Whenever a unit's state or health changes the reconciler calls `changed(name)`, which wakes the
units that wait for it and stops those that require it if it went down; nothing polls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from supervisor.contract import HealthState, State
from supervisor.unit.spec import UnitSpec


class HealthView(Protocol):
    @property
    def state(self) -> HealthState | None: ...


class Unit(Protocol):
    """What ordering needs of a runner."""

    @property
    def state(self) -> State: ...

    @property
    def spec(self) -> UnitSpec | None: ...

    @property
    def health(self) -> HealthView: ...

    @property
    def waiting_for(self) -> str | None: ...

    def poke(self) -> None: ...

    def dependency_down(self, name: str, state: str) -> None: ...


def not_ready(unit: Unit | None) -> str | None:
    """Why `unit` does not count as up yet (None: it does)."""
    if unit is None:
        return "not loaded"
    if unit.state is not State.RUNNING:
        return str(unit.state.value)
    if unit.spec is not None and unit.spec.unit.health is not None:
        health = unit.health.state
        if health is not HealthState.HEALTHY:
            return f"running, health {health or 'unknown'}"
    return None


class Ordering:
    """The rule over `units` (the reconciler's runners, by name). Which units name which is
    indexed once and again only after `invalidate()` (a spec or the set of units changed): a
    state change of one unit looks up the few that name it instead of reading every unit's
    spec, which made a storm of 1000 starts (a few state changes each) O(n^2)."""

    def __init__(self, units: Mapping[str, Unit]) -> None:
        self.units = units
        self._index: _Index | None = None

    def invalidate(self) -> None:
        """A unit was added or removed, or its spec replaced: index again at the next look."""
        self._index = None

    def _edges(self) -> _Index:
        if self._index is None:
            self._index = _Index(self.units)
        return self._index

    def blocker(self, spec: UnitSpec) -> str | None:
        """Why `spec` may not launch now, naming the first unit it waits for; None: go."""
        for name in spec.unit.service.starts_after:
            why = not_ready(self.units.get(name))
            if why is not None:
                return f"waiting for {name} ({why})"
        return None

    def changed(self, name: str) -> None:
        """`name` changed state or health: wake every unit that waits for it, and stop (to
        start again) every unit that requires it, if it is no longer running."""
        naming = self._edges().naming.get(name)
        if not naming:
            return
        dependency = self.units.get(name)
        down = _down(dependency)
        for other in naming:
            unit = self.units.get(other)
            spec = unit.spec if unit is not None else None
            if unit is None or spec is None:
                continue
            if down is not None and name in spec.unit.service.requires:
                unit.dependency_down(name, down)
            if unit.waiting_for is not None and name in spec.unit.service.starts_after:
                unit.poke()

    def check_all(self) -> None:
        """Apply `requires` to every unit at once: after re-adoption, where each unit's state
        was set before the units it requires were even loaded."""
        for name in list(self.units):
            if _down(self.units[name]) is not None:
                self.changed(name)

    def dependents(self, name: str) -> dict[str, list[str]]:
        """The reverse edges: which units require, want or name in `after` `name` (`before`:
        the units ordered after it, as systemd's Before=)."""
        found = self._edges().reverse.get(name, {})
        return {key: list(found.get(key, ())) for key in _REVERSE}

    def pulled_in(self, name: str) -> Iterable[str]:
        """The units `name` requires or wants, and theirs, transitively (a start brings them up
        as systemd's Requires= and Wants= do), nearest first."""
        seen: dict[str, None] = {}
        queue = [name]
        while queue:
            unit = self.units.get(queue.pop(0))
            if unit is None or unit.spec is None:
                continue
            service = unit.spec.unit.service
            for other in (*service.requires, *service.wants):
                if other != name and other not in seen:
                    seen[other] = None
                    queue.append(other)
        return list(seen)


def _down(unit: Unit | None) -> str | None:
    """Why a unit others require counts as gone (None: it is running). Health does not count:
    an unhealthy run is restarted by its own [health] policy, which is when it goes."""
    if unit is None:
        return "not loaded"
    return None if unit.state is State.RUNNING else str(unit.state.value)


_REVERSE = ("required_by", "wanted_by", "before")


class _Index:
    """Who names whom, from every unit's spec at one moment."""

    def __init__(self, units: Mapping[str, Unit]) -> None:
        # name -> the units whose `requires` or `starts_after` name it (changed() acts on them)
        self.naming: dict[str, list[str]] = {}
        # name -> reverse edge -> the units (sorted) that name it there (dependents())
        self.reverse: dict[str, dict[str, list[str]]] = {}
        for other, unit in sorted(units.items()):
            if unit.spec is None:
                continue
            service = unit.spec.unit.service
            for name in dict.fromkeys((*service.requires, *service.starts_after)):
                self.naming.setdefault(name, []).append(other)
            named = {"required_by": service.requires, "wanted_by": service.wants,
                     "before": service.after}  # fmt: skip
            for key, names in named.items():
                for name in dict.fromkeys(names):
                    self.reverse.setdefault(name, {}).setdefault(key, []).append(other)
