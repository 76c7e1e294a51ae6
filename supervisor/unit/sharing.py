"""Equal sections of different units are one object (issue 23: the daemon's heap per unit).

A validated `UnitFile` is about 30 Python objects, ~5 KB, and most units leave most sections
at their defaults or spell them alike: 5000 units would hold 5000 equal `[sandbox]`,
`[resources]`, `[restart]`, ... Sections are frozen models, so a section equal to one another
unit already holds can be that one: `share` swaps each for the held equal one, if any.

Equal means equal in every value and its type (`1` is not `1.0`: the spec hash would tell
them apart), in which keys the file set (`model_fields_set`), recursively, and in dict order
(a different order only shares less). The table holds its sections weakly, so a section no
unit holds any more leaves it, and it is keyed by the hash of that value (an int, not a copy
of it): a candidate found under the hash is compared in full before it is shared.

`[service]` is not shared: it differs between units almost always (the command, its
environment), so an entry for it would cost more than it ever saves; only its set of field
names is, as the unit's own. Nested models (a mount,
a device) are shared with the section that holds them.
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable
from typing import Any

from pydantic import BaseModel

from supervisor.unit.schema import Section, UnitFile

_UNSHARED = frozenset({"service"})
_held: weakref.WeakValueDictionary[int, Section] = weakref.WeakValueDictionary()
# The sets of field names held, by their value: as many as the distinct sets of keys written
# in `[service]` sections and at a unit's top level (a set cannot be held weakly; these are few).
_fields_sets: dict[frozenset[str], set[str]] = {}


def section_key(value: Any) -> Hashable:
    """Everything that makes `value` what it is, as nested tuples."""
    if isinstance(value, BaseModel):
        return (
            type(value),
            frozenset(value.model_fields_set),
            tuple(section_key(v) for v in value.__dict__.values()),
        )
    if isinstance(value, list | tuple):
        return (type(value), tuple(section_key(v) for v in value))
    if isinstance(value, dict):
        return (dict, tuple((k, section_key(v)) for k, v in value.items()))
    return (type(value), value)


def _share_fields_set(model: BaseModel) -> None:
    """Give `model` the held set of field names equal to its own, if one is held. Every model
    keeps which keys its file set (a set of a few names, ~200 bytes); the unit's and its
    `[service]`'s, which are not shared, are alike across most units. Pydantic never changes
    a frozen model's set (`model_copy` copies it first), so one set can serve them all."""
    own = model.__pydantic_fields_set__
    held = _fields_sets.setdefault(frozenset(own), own)
    if held is not own:
        object.__setattr__(model, "__pydantic_fields_set__", held)


def share(unit: UnitFile) -> UnitFile:
    """`unit`, each of its sections but `[service]` replaced by an equal one already held
    (or held from now on for the next unit), and its own and its `[service]`'s sets of field
    names by equal ones held."""
    _share_fields_set(unit)
    _share_fields_set(unit.service)
    fields = unit.__dict__
    for name, section in fields.items():
        if name in _UNSHARED or not isinstance(section, Section):
            continue
        key = section_key(section)
        try:
            digest = hash(key)
        except TypeError:  # a value that cannot be hashed: this section is not shared
            continue
        held = _held.get(digest)
        if held is None:
            _held[digest] = section
        elif held is not section and section_key(held) == key:
            # A frozen model's fields never change: writing past its __setattr__ only swaps
            # one value for an equal one.
            fields[name] = held
    return unit


def held_count() -> int:
    """How many distinct sections are held (for tests)."""
    return len(_held)
