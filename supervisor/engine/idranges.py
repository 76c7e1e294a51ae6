"""Each unit's user-namespace range, decided at every reload and persisted in
`<data_dir>/userns.json`, the way bridge units' addresses are (sandbox/host/ipam.py).

A picked block is kept across the unit's restarts, daemon restarts (`kill -9` included: the
file is written, atomically, before the reload that picked it hands out any launch) and
reloads, so the files a service wrote stay its own; it is freed at the first reload after the
unit's file is gone and its last run has ended. Explicit ranges are not stored: the unit file
says them. The decision itself is unit/userns.py's `assign`.

Layout (version 1)::

    {"version": 1, "pool": "524288-1878982656", "picks": {"web": 1048576, "db": 1114112}}
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from supervisor.errors import ConfigError
from supervisor.linux import helduserns, safefs, stamps
from supervisor.log import get_logger
from supervisor.unit import userns
from supervisor.unit.diagnostics import UnitError
from supervisor.unit.perspec import PerSpec
from supervisor.unit.spec import UnitSpec

log = get_logger()
FORMAT_VERSION = 1
FILE_NAME = "userns.json"


class HeldNamespaces(Protocol):
    """Where the launchers hold each range's user namespace (linux/helduserns.py Holder): one
    file per range, named helduserns.path_for's base name."""

    def names(self) -> list[str]: ...
    def stamp(self) -> tuple[int, int, int] | None: ...
    def drop(self, name: str) -> bool: ...
    def destroy(self) -> None: ...


class IdRanges:
    """The ranges of one daemon's units: `assign` at reload, `get` at launch and in status."""

    def __init__(
        self,
        data_dir: Path,
        pool: userns.IdRange,
        reserved: list[userns.Reserved],
        held: HeldNamespaces | None = None,
    ):
        self.path = data_dir / FILE_NAME
        self.pool, self.reserved = pool, reserved
        # Where the launchers hold each range's user namespace (linux/helduserns.py).
        self.held = held
        self._ranges: dict[str, userns.IdRange] = {}
        self._picks = self._read()
        self._saved = True  # False after a failed write: the next reload tries again
        # The last decision's inputs (what units want, units kept, ranges and picks it began
        # from) and its refusals, when it changed nothing: assign's shortcut (None: decide).
        self._last: tuple[_Inputs, dict[str, list[UnitError]]] | None = None
        self._wanted = PerSpec(_want)
        # The ranges a listing of the holder last left it holding nothing but, and its stamp
        # then, while that stamp was settled: `_drop_held` need not list it again (issue 23:
        # listing and parsing 5000 names was ~9 ms of every 5000-unit reload).
        self._held_clean: tuple[Mapping[str, userns.IdRange], tuple[int, int, int]] | None = None
        for name, base in self._picks.items():  # before the first reload (re-adopted runs)
            self._ranges[name] = userns.IdRange(base, userns.BLOCK)
        # Those of ranges no longer picked went while no daemon ran; an explicit range's is
        # dropped too (not stored: who owned it is unknown), its next launch makes it again.
        self._drop_held(self._ranges, None)
        count, hit = userns.pool_blocks(pool, reserved)
        if hit:
            log.info("daemon.userns_pool_skipped", pool=str(pool), free_blocks=count,
                     skipped=[str(r) for r in hit])  # fmt: skip

    def get(self, unit: str) -> userns.IdRange | None:
        return self._ranges.get(unit)

    def assign(
        self, specs: Mapping[str, UnitSpec], known: Iterable[str]
    ) -> dict[str, list[UnitError]]:
        """Give every unit of `specs` with a user namespace its range; return the units refused
        (an explicit range that overlaps, no free block left). `known` are the units that exist
        without a valid spec (an invalid file, a removed unit still stopping): they keep their
        blocks. A unit in neither gives its block back."""
        keep = frozenset(known) - specs.keys()
        wants = self._wants_of(specs)
        inputs = (wants, keep, self._ranges, self._picks)
        if self._last is not None and self._saved and _same_inputs(self._last[0], inputs):
            # The pure decision's inputs are those of the last call, and its answer was what
            # it started from: the same answer again, without deciding 5000 units afresh
            # (issue 23: a reload costs what changed). No range changed hands; a held
            # namespace of none (a launch that raced its unit's release) still goes.
            self._drop_held(self._ranges, None)
            return {name: list(errors) for name, errors in self._last[1].items()}
        held = {n: r for n, r in self._ranges.items() if n in keep}
        result = userns.assign(
            specs, self.pool, self.reserved, picks=self._picks, held=held, before=self._ranges
        )
        ranges = {**result.ranges, **held}
        picks = {**{n: b for n, b in self._picks.items() if n in held}, **result.picks}
        if ranges == self._ranges and picks == self._picks:
            # A fixed point: keep the very objects, so the next call can tell by identity.
            ranges, picks = self._ranges, self._picks
            self._last = ((wants, keep, ranges, picks), result.errors)
        else:
            self._last = None
        for name in sorted(set(self._picks) - set(picks)):
            log.info("unit.userns_released", unit=name, range=str(self._ranges.get(name)))
        if picks != self._picks or not self._saved:
            self._saved = self._write(picks)
            self._picks = picks
        for name in result.new:
            log.info("unit.userns_picked", unit=name, range=str(result.ranges[name]))
        self._drop_held(ranges, set(self._ranges.items()))
        self._ranges = ranges
        return result.errors

    def _wants_of(self, specs: Mapping[str, UnitSpec]) -> dict[str, tuple[object, str]]:
        """What each unit asks for (`userns.wanted`) and the path its errors name: all of a
        spec that the decision reads, worked out again only for a changed spec."""
        return self._wanted.values(specs)

    def release(self, unit: str) -> None:
        """`unit` is gone (its file removed, its last run ended): give its block back, with the
        user namespace held for it."""
        gone = self._ranges.get(unit)
        if gone is None:
            return
        ranges = {n: r for n, r in self._ranges.items() if n != unit}
        picks = {n: b for n, b in self._picks.items() if n != unit}
        if picks != self._picks or not self._saved:
            self._saved = self._write(picks)
            self._picks = picks
        log.info("unit.userns_released", unit=unit, range=str(gone))
        self._drop_held(ranges, set(self._ranges.items()))
        self._ranges = ranges

    def drop_held(self) -> None:
        """Drop every held user namespace, and what holds them (the daemon exits, its
        sandboxes stopped)."""
        if self.held is not None:
            self.held.destroy()
            self.held = None

    def _drop_held(
        self, now: Mapping[str, userns.IdRange], before: set[tuple[str, userns.IdRange]] | None
    ) -> None:
        """Drop every held user namespace but those of the ranges in `now` that the same unit
        had `before` (None: whoever held them is trusted, as read back from the picks): a range
        given back, or given to another unit (never two units in one namespace), loses its own."""
        held = self.held
        if held is None:
            return
        clean, stamp = self._held_clean, held.stamp()
        if before is None and clean is not None and clean[0] is now and clean[1] == stamp:
            # Listed since these ranges were decided, nothing but theirs was left, and no file
            # was made or removed there since (a launch that raced a release moves the stamp).
            return
        kept = {(r.base, r.size) for n, r in now.items() if before is None or (n, r) in before}
        for name in held.names():
            if helduserns.range_of(name) in kept:
                continue
            if held.drop(name):
                log.info("unit.userns_dropped", file=name)
        self._held_clean = None
        after = held.stamp()
        # Trusted only once older than the racy window: a file made in the same timestamp tick
        # as this listing, after it, would leave the stamp as it is.
        if after is not None and stamps.settled(after[0], after[1], time.time_ns()):
            self._held_clean = (now, after)

    # -- file ------------------------------------------------------------------------------

    def _read(self) -> dict[str, int]:
        try:
            with safefs.directory(self.path.parent) as directory:
                raw = safefs.read_owned(directory, self.path.name)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(str(self.path), "", f"cannot read: {exc.strerror}") from None
        try:
            data = json.loads(raw)
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"unsupported version {data.get('version')!r}")
            picks = {str(u): int(b) for u, b in data["picks"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Fail closed: guessing could hand a running sandbox's ids to another unit.
            raise ConfigError(
                str(self.path), "", f"corrupt ({exc}); fix or remove it while no sandbox runs"
            ) from None
        return picks

    def _write(self, picks: dict[str, int]) -> bool:
        data = {
            "version": FORMAT_VERSION,
            "pool": str(self.pool),
            "picks": dict(sorted(picks.items())),
        }
        text = json.dumps(data, indent=1).encode() + b"\n"
        try:
            with safefs.directory(self.path.parent, mkdir_mode=0o700) as directory:
                safefs.write_atomic(directory, self.path.name, text, 0o600)
                os.fsync(directory)  # the rename is durable once the directory entry is
        except OSError as exc:
            # The picks stay in memory (and hold for this daemon); the next reload writes again.
            log.error("daemon.userns_save_failed", path=str(self.path), error=exc.strerror)
            return False
        return True


def _want(spec: UnitSpec) -> tuple[object, str]:
    return userns.wanted(spec), spec.path


# (each unit's want and path, the units kept without a spec, ranges before, picks before)
_Inputs = tuple[
    dict[str, tuple[object, str]], frozenset[str], dict[str, userns.IdRange], dict[str, int]
]


def _same_inputs(last: _Inputs, now: _Inputs) -> bool:
    """The ranges and picks are compared by identity: they are the objects `assign` kept."""
    return last[2] is now[2] and last[3] is now[3] and last[1] == now[1] and last[0] == now[0]
