"""Desired state: this node's unit keys as etcd has them, and the units they make.

Fed by a full read at one revision (`reset`) and then by watch batches (`apply`), it keeps the
value of every unit key of this node (`PREFIX/nodes/<node>/units/*`) and of every node
(`PREFIX/all/units/*`). A batch event at or below the revision already seen is skipped, so a
watch resumed from an earlier revision applies nothing twice.

Each value is validated exactly as a unit file (`unit.loader.parse_unit`), its origin named
`etcd:<key>` so that every error says which key: `etcd:/sandboxd/v1/all/units/web:3:
service.exec: ...`. A value larger than a unit file may be, or not UTF-8, is refused the same
way. The result is cached by (key, mod_revision): a reload with nothing new costs a dict walk.

`load` is the engine's unit source (engine/sources.py): None until the first full read, so a
daemon started while etcd is down keeps the units it re-adopted instead of stopping them.
"""

from __future__ import annotations

from supervisor.cluster import keys
from supervisor.cluster.gateway import KeyValue, WatchBatch
from supervisor.unit.diagnostics import KEY_FILE, UnitError, UnitFileError
from supervisor.unit.loader import parse_unit
from supervisor.unit.spec import UnitSpec

ORIGIN = "etcd:"


def origin(key: str) -> str:
    return ORIGIN + key


def validate(key: str, name: str, value: bytes) -> tuple[UnitSpec | None, list[UnitError]]:
    """One key's value as a unit: (spec, []) or (None, every problem, each naming the key)."""
    where = origin(key)
    if len(value) > keys.MAX_VALUE:
        return None, [UnitError(where, KEY_FILE, f"value too large ({len(value)} bytes; the "
                                "limit is 1M, as for a unit file)")]  # fmt: skip
    try:
        return parse_unit(where, name, value), []
    except UnitFileError as exc:
        return None, list(exc.errors)


class DesiredState:
    origin = ORIGIN

    def __init__(self, prefix: str, node: str) -> None:
        self.prefix, self.node = prefix, node
        self.revision = 0  # every change up to this revision is in `values`
        self.loaded = False  # a full read has happened
        self.values: dict[str, KeyValue] = {}  # this node's unit keys (own and all/)
        self._parsed: dict[tuple[str, int], tuple[UnitSpec | None, list[UnitError]]] = {}
        # The revision of the value each unit last validated from: what runs, or will.
        self.valid_revision: dict[str, int] = {}

    def reset(self, revision: int, kvs: list[KeyValue]) -> None:
        """Everything, as read at `revision` (the first read, and after a compaction)."""
        self.values = {kv.key: kv for kv in kvs if self._mine(kv.key)}
        self.revision, self.loaded = revision, True

    def apply(self, batch: WatchBatch) -> bool:
        """A watch batch; True if a unit key of this node changed."""
        changed = False
        newest = self.revision
        for event in batch.events:
            kv = event.kv
            if kv.mod_revision <= self.revision:
                continue  # seen already, in the full read or before a reconnect
            newest = max(newest, kv.mod_revision)
            if not self._mine(kv.key):
                continue
            if event.deleted:
                changed |= self.values.pop(kv.key, None) is not None
            else:
                self.values[kv.key] = kv
                changed = True
        # A batch without events (but the first, `created`) is a progress notice: every change
        # up to its header revision has been sent. A batch with events says nothing about what
        # follows them.
        progress = not batch.events and not batch.created
        self.revision = max(newest, batch.revision) if progress else newest
        return changed

    def _mine(self, key: str) -> bool:
        return keys.unit_of(key, self.prefix, self.node) is not None

    def chosen(self) -> dict[str, KeyValue]:
        """By unit name, the value that counts: this node's key over the all/ one."""
        found: dict[str, tuple[bool, KeyValue]] = {}
        for key, kv in self.values.items():
            of = keys.unit_of(key, self.prefix, self.node)
            if of is None:
                continue
            name, own = of
            if name not in found or own:
                found[name] = (own, kv)
        return {name: kv for name, (_own, kv) in found.items()}

    def load(self) -> tuple[dict[str, UnitSpec], dict[str, list[UnitError]]] | None:
        """The units etcd gives this node, validated; None before the first full read."""
        if not self.loaded:
            return None
        specs: dict[str, UnitSpec] = {}
        errors: dict[str, list[UnitError]] = {}
        parsed = {}
        for name, kv in sorted(self.chosen().items()):
            entry = self._parsed.get((kv.key, kv.mod_revision))
            if entry is None:
                entry = validate(kv.key, name, kv.value)
            parsed[(kv.key, kv.mod_revision)] = entry
            spec, problems = entry
            if spec is not None:
                specs[name] = spec
            else:
                errors[name] = problems
        self._parsed = parsed
        chosen = self.chosen()
        for name in specs:
            self.valid_revision[name] = chosen[name].mod_revision
        for name in self.valid_revision.keys() - chosen.keys():
            del self.valid_revision[name]
        return specs, errors

    def refused(self, name: str) -> None:
        """The engine refused `name`'s valid value (a cross-unit error): it is not applied."""
        self.valid_revision.pop(name, None)
