"""A validated unit, named, with a stable hash of its meaning.

The hash is taken over the canonical JSON form of the fully defaulted model, so two files that
differ only in key order, comments, spacing or spelling ("1024K" vs "1M") hash the same, and the
reconciler can tell unchanged, resource-only and real changes apart without comparing models.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from supervisor.images.oci import Image
from supervisor.unit.schema import UnitFile
from supervisor.unit.sharing import share

# Sections whose change is applied to the running cgroup without a restart.
LIVE_SECTIONS = frozenset({"resources"})


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(parts: dict[str, str], skip: frozenset[str] = frozenset()) -> str:
    """sha256 over `key=json` lines in key order: one JSON encoding serves both hashes."""
    text = "\n".join(f"{key}={parts[key]}" for key in sorted(parts) if key not in skip)
    return hashlib.sha256(text.encode()).hexdigest()


# Slots: the daemon holds a spec per unit for the unit's life, and a __dict__ of its ten
# fields was ~250 bytes more than the slots.
@dataclass(frozen=True, slots=True)
class UnitSpec:
    name: str
    path: str
    unit: UnitFile
    # The image `unit.sandbox.image` named when the unit was loaded (its defaults are already
    # in `unit`); its digest and layers are part of the hash, so a tag that now names another
    # image is a changed spec and `reload` restarts the unit onto it.
    image: Image | None = None
    # Where it came from, besides `path` (for an instance, the template): shown by status and
    # `sandboxctl cat`, never hashed, so moving a key into a drop-in restarts nothing.
    template: str | None = None
    dropins: tuple[str, ...] = ()
    # A digest of the `[credentials]` contents as read when the unit was loaded
    # (unit/credentials.py): a changed secret file is a changed spec, though its value is never
    # in the spec's JSON. None: no credentials, or a spec read back from a state file, which
    # then keeps the hashes it was recorded with (`recorded_hashes`).
    credentials_digest: str | None = None
    recorded_hashes: tuple[str, str] | None = None
    hash: str = field(init=False)
    restart_hash: str = field(init=False)  # the hash without the live-applicable sections

    def __post_init__(self) -> None:
        share(self.unit)  # its sections equal to another unit's become that unit's (sharing.py)
        data = {"name": self.name, **self.unit.model_dump(mode="json")}
        # Encoded per section, once: the load benchmark spends a good share of its time here.
        parts = {key: canonical_json(value) for key, value in data.items()}
        if self.image is not None:
            parts["image"] = canonical_json(
                [self.image.digest, [layer.diff_id for layer in self.image.layers]]
            )
        if self.credentials_digest is not None:
            parts["credentials"] = canonical_json(self.credentials_digest)
        if self.recorded_hashes is not None and self.unit.credentials:
            object.__setattr__(self, "hash", self.recorded_hashes[0])
            object.__setattr__(self, "restart_hash", self.recorded_hashes[1])
            return
        object.__setattr__(self, "hash", _digest(parts))
        object.__setattr__(self, "restart_hash", _digest(parts, LIVE_SECTIONS))

    @property
    def hostname(self) -> str:
        return self.unit.sandbox.hostname or self.name

    def to_json(self) -> dict[str, Any]:
        """The canonical, JSON-able form (what the hash covers), for state files and the API."""
        # The sources only when there are some: a plain unit's record stays what an older
        # daemon reads back (it refuses unknown keys), so a downgrade still re-adopts it.
        sources = self.sources_json() if self.template or self.dropins else {}
        data = {
            "name": self.name,
            "path": self.path,
            **sources,
            **self.unit.model_dump(mode="json"),
        }
        if self.image is not None:
            data["image"] = self.image.to_json()
        return data

    def sources_json(self) -> dict[str, Any]:
        return {"template": self.template, "dropins": list(self.dropins)}
