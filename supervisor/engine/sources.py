"""Units from a source beside the unit directory: the fleet's etcd keys (cluster/desired.py).

A source hands the reconciler validated units at every reload, or None while it does not know
them yet (the daemon started while etcd is down): then the units it gave before keep their
version, found by the origin their spec names (`etcd:...`), because stopping a service for a
control plane's trouble is what the fleet must never do.

Local units (files and transient ones) win a name clash: the source's unit is ignored, and
the local unit's status says so (`shadowed`), as its log does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from supervisor.log import get_logger
from supervisor.unit.diagnostics import UnitError
from supervisor.unit.loader import cross_unit_errors
from supervisor.unit.spec import UnitSpec

log = get_logger()


class UnitSource(Protocol):
    # What every spec of this source has its `path` start with.
    origin: str

    def load(self) -> tuple[dict[str, UnitSpec], dict[str, list[UnitError]]] | None: ...

    def refused(self, name: str) -> None: ...


def merge(
    source: UnitSource,
    specs: Mapping[str, UnitSpec],
    errors: Mapping[str, Sequence[object]],
    running: Mapping[str, UnitSpec | None],
) -> tuple[dict[str, UnitSpec], dict[str, Sequence[object]], dict[str, str]]:
    """The local units (`specs`, `errors`) and the source's; `running` is each runner's spec.
    Returns (specs, errors, shadowed: local unit -> why the source's unit of its name is
    ignored)."""
    all_specs, all_errors = dict(specs), dict(errors)
    local = specs.keys() | errors.keys()
    got = source.load()
    if got is None:
        for name, spec in running.items():
            if spec is not None and spec.path.startswith(source.origin) and name not in local:
                all_specs[name] = spec
        return all_specs, all_errors, {}
    new_specs, new_errors = got
    shadowed = {}
    for name in sorted((new_specs.keys() | new_errors.keys()) & local):
        spec = new_specs.get(name)
        where = spec.path if spec is not None else _where(new_errors[name], source.origin)
        shadowed[name] = f"{where} is ignored: a local unit has the name {name}"
        log.warning("unit.name_taken", unit=name, source=where,
                    problem="a local unit has this name; the source's unit is ignored")  # fmt: skip
    all_specs |= {n: s for n, s in new_specs.items() if n not in local}
    all_errors |= {n: e for n, e in new_errors.items() if n not in local}
    if new_specs:
        # A source's unit may name local units in `after`/`requires`; the files' own checks
        # ran without it.
        crossed = cross_unit_errors(all_specs, all_specs.keys() | all_errors.keys())
        for name in (new_specs.keys() - local) & crossed.keys():
            all_specs.pop(name)
            all_errors[name] = crossed[name]
            source.refused(name)
    return all_specs, all_errors, shadowed


def _where(errors: Sequence[UnitError], default: str) -> str:
    return errors[0].path if errors else default
