"""A value worked out from each unit's spec, kept per spec object between reloads.

The loader hands back the very spec object for a file that did not change (loader.py's cache),
so a value of a spec (what its user namespace wants, whether a cross-unit check concerns it) is
worked out again only for the units whose files changed: a reload of 5000 units with one edit
does one unit's work, not 5000 (issue 23). A spec is immutable, so a kept value can not go stale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from supervisor.unit.spec import UnitSpec

T = TypeVar("T")


class PerSpec(Generic[T]):
    """`values(specs)`: `compute(spec)` for each unit, reused while its spec is the same object;
    only the units of the latest call are kept."""

    def __init__(self, compute: Callable[[UnitSpec], T]) -> None:
        self._compute = compute
        self._kept: dict[str, tuple[UnitSpec, T]] = {}

    def values(self, specs: Mapping[str, UnitSpec]) -> dict[str, T]:
        kept, compute = self._kept, self._compute
        now: dict[str, tuple[UnitSpec, T]] = {}
        for name, spec in specs.items():
            hit = kept.get(name)
            if hit is None or hit[0] is not spec:
                hit = (spec, compute(spec))
            now[name] = hit
        self._kept = now
        return {name: hit[1] for name, hit in now.items()}
