"""`after`: a unit starts only once each unit it names is running and ready (and healthy, if
it has `[health]`).

The rule is checked by the waiting unit itself, right before each launch (the first one and
every restart out of backoff), so a dependency that fails or restarts leaves its dependents
waiting in `starting` with the reason in words ("waiting for db (backoff)") instead of letting
them crash-loop against it. Dependents already running are left alone: `after` orders starts,
it does not bind lifetimes (as systemd's After= without Requires=). Cycles and unknown names
never get here: the loader rejects them (unit/loader.py).

Whenever a unit's state or health changes the reconciler calls `changed(name)`, which wakes the
units that wait for it; nothing polls.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    def __init__(self, units: Mapping[str, Unit]) -> None:
        self.units = units

    def blocker(self, spec: UnitSpec) -> str | None:
        """Why `spec` may not launch now, naming the first unit it waits for; None: go."""
        for name in spec.unit.service.after:
            why = not_ready(self.units.get(name))
            if why is not None:
                return f"waiting for {name} ({why})"
        return None

    def changed(self, name: str) -> None:
        """`name` changed state or health: wake every unit that waits for it."""
        for unit in self.units.values():
            if (
                unit.waiting_for is not None
                and unit.spec is not None
                and name in unit.spec.unit.service.after
            ):
                unit.poke()
