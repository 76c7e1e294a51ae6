"""`sandboxctl images`: which images the units use, their size on disk, and what a prune frees.

An image is in use while any unit names it: a unit that is running, stopped or failed, and a
unit whose file became invalid while its last valid version runs (the runner's spec). So prune
never removes a layer a unit may start from, only layers left by images no unit names any more
(an edited unit, a removed file, a tag moved to a new image).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from supervisor.unit.spec import UnitSpec


@dataclass
class ImageRow:
    ref: str
    digest: str
    layers: list[str]
    units: list[str] = field(default_factory=list)

    def to_json(self, stored: dict[str, int]) -> dict[str, Any]:
        kind, _, rest = self.ref.partition(":")
        if kind == "docker-archive":
            name, tag = rest, None
        else:
            name, _, tag = self.ref.rpartition(":")
        return {
            "ref": self.ref,
            "name": name,
            "tag": tag,
            "digest": self.digest,
            "layers": len(self.layers),
            # Each layer counted once per image, though images may share it.
            "size": sum(stored.get(layer, 0) for layer in self.layers),
            "unpacked": all(layer in stored for layer in self.layers),
            "units": sorted(self.units),
        }


def in_use(specs: Iterable[UnitSpec]) -> set[str]:
    """Every layer any of `specs` runs from."""
    return {layer.diff_id for spec in specs if spec.image for layer in spec.image.layers}


def report(specs: Iterable[tuple[str, UnitSpec]], stored: dict[str, int]) -> dict[str, Any]:
    """The `GET /v1/images` body: one row per image (ref and digest) the units name, and the
    layers in the store that no unit uses (what `prune` would remove)."""
    rows: dict[tuple[str, str], ImageRow] = {}
    used: set[str] = set()
    for name, spec in specs:
        if spec.image is None:
            continue
        layers = [layer.diff_id for layer in spec.image.layers]
        row = rows.setdefault((spec.image.ref, spec.image.digest),
                              ImageRow(spec.image.ref, spec.image.digest, layers))  # fmt: skip
        row.units.append(name)
        used.update(layers)
    unused = {layer: size for layer, size in stored.items() if layer not in used}
    return {
        "images": [rows[key].to_json(stored) for key in sorted(rows)],
        "unused": {"layers": len(unused), "size": sum(unused.values())},
    }
