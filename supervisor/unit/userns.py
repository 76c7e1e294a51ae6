"""User-namespace id ranges: which host uids and gids a unit's sandbox is made of.

A unit whose sandbox has a user namespace maps ids 0..size-1 inside onto `base..base+size-1`
on the host (the same range for uids and gids). `user_namespace = "pick"` (the default for a
unit with a user namespace) takes a free 65536-aligned block of 65536 ids from the daemon's
`userns_pool`; a table `{ base, size }` names a range of the operator's choosing. Two units
never share ids, or root in one sandbox could reach the other's files, and no range overlaps
the ids /etc/subuid and /etc/subgid give host users (their rootless containers use them).

`assign` is the one decision, a pure function: the daemon calls it at every reload with the
picks it persisted (engine/idranges.py), `sandboxctl validate` with none.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from supervisor.unit.diagnostics import UnitError
from supervisor.unit.spec import UnitSpec

BLOCK = 65536  # ids per picked range: every 16-bit uid an image may use
MAX_ID = 2**32 - 2  # (uid_t)-1 is "no id", never mappable
DEFAULT_POOL = "524288-1878982656"
KEY = "sandbox.user_namespace"


@dataclass(frozen=True, order=True)
class IdRange:
    """Host ids base..base+size-1."""

    base: int
    size: int

    @property
    def end(self) -> int:
        """The last id (inclusive)."""
        return self.base + self.size - 1

    def overlaps(self, other: IdRange) -> bool:
        return self.base <= other.end and other.base <= self.end

    def __str__(self) -> str:
        return f"{self.base}-{self.end}"


def parse_pool(text: str) -> IdRange:
    """`FIRST-LAST` (inclusive host ids) holding at least one aligned block; ValueError if not."""
    found = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if found is None:
        raise ValueError(f'{text!r} is not a range of ids such as "{DEFAULT_POOL}"')
    first, last = int(found[1]), int(found[2])
    if first < 1 or last > MAX_ID or last < first:
        raise ValueError(f"{text!r} must run upwards from 1 to at most {MAX_ID}")
    pool = IdRange(first, last - first + 1)
    if next(_blocks(pool), None) is None:
        raise ValueError(f"{text!r} holds no {BLOCK}-aligned block of {BLOCK} ids")
    return pool


@dataclass(frozen=True)
class Reserved:
    """Ids a host user owns (a line of /etc/subuid or /etc/subgid)."""

    path: str
    owner: str
    ids: IdRange

    def __str__(self) -> str:
        return f"{self.path} entry of {self.owner} ({self.ids})"


def parse_subids(path: str, text: str) -> list[Reserved]:
    """`owner:first:count` lines (subuid(5)); comments, blanks and malformed lines skipped."""
    found = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            continue
        if int(parts[2]) > 0:
            found.append(Reserved(path, parts[0], IdRange(int(parts[1]), int(parts[2]))))
    return found


def read_subids(*paths: str) -> list[Reserved]:
    """The entries of each file; a missing or unreadable file has none (no host user owns
    subordinate ids then)."""
    found = []
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                found += parse_subids(path, f.read(1 << 20))
        except OSError:
            continue
    return found


def wanted(spec: UnitSpec) -> str | IdRange | None:
    """ "pick", an explicit range, or None (no user namespace: host ids)."""
    sandbox = spec.unit.sandbox
    if "user" not in sandbox.namespaces:
        return None
    chosen = sandbox.user_namespace
    if chosen is None or chosen == "pick":
        return "pick"
    if isinstance(chosen, str):  # "host" never validates with a user namespace
        return None
    return IdRange(chosen.base, chosen.size)


def _blocks(pool: IdRange) -> Iterator[IdRange]:
    first = -(-pool.base // BLOCK) * BLOCK
    for base in range(first, pool.end - BLOCK + 2, BLOCK):
        yield IdRange(base, BLOCK)


def pool_blocks(pool: IdRange, reserved: list[Reserved]) -> tuple[int, list[Reserved]]:
    """How many blocks of the pool may be picked, and the entries that took some away."""
    # Block i holds ids i*BLOCK..(i+1)*BLOCK-1: counted by index, not built one by one.
    first, last = -(-pool.base // BLOCK), (pool.end + 1) // BLOCK - 1
    lost: set[int] = set()
    hit = []
    for entry in reserved:
        low, high = max(first, entry.ids.base // BLOCK), min(last, entry.ids.end // BLOCK)
        if low <= high:
            hit.append(entry)
            lost.update(range(low, high + 1))
    return max(0, last - first + 1) - len(lost), hit


@dataclass
class Assignment:
    ranges: dict[str, IdRange] = field(default_factory=dict)  # every unit with a namespace
    picks: dict[str, int] = field(default_factory=dict)  # unit -> base, to persist
    errors: dict[str, list[UnitError]] = field(default_factory=dict)
    new: list[str] = field(default_factory=list)  # units that got a block just now


def assign(
    specs: Mapping[str, UnitSpec],
    pool: IdRange,
    reserved: list[Reserved],
    *,
    picks: Mapping[str, int] | None = None,
    held: Mapping[str, IdRange] | None = None,
    before: Mapping[str, IdRange] | None = None,
) -> Assignment:
    """Give every unit with a user namespace its range.

    `picks` are the blocks picked before (kept while still free and in the pool); `held` the
    ranges of units that are not in `specs` now but still exist (an invalid file keeps its
    unit's range while its last version may run); `before` every unit's range at the last
    assignment. An explicit range must not overlap a subordinate-id entry, a held or picked
    block of another unit, or another explicit range: the unit that had the ids keeps them
    (then the unit earlier in name order), the other is refused with an error on its
    user_namespace key. So a file added beside a running unit never takes its ids. Units that
    find no free block are refused too, naming the pool. `picks` of the result are only
    those of `specs`."""
    picks, held, before = dict(picks or {}), dict(held or {}), dict(before or {})
    out = Assignment()
    taken: list[tuple[str, IdRange]] = list(held.items())
    wants = {name: wanted(spec) for name, spec in sorted(specs.items())}
    kept = {n: b for n, b in picks.items() if wants.get(n) == "pick"}
    for name, base in kept.items():  # the picks first: a new explicit range yields to them
        block = IdRange(base, BLOCK)
        if (
            base % BLOCK == 0
            and pool.base <= base
            and block.end <= pool.end
            and not any(r.ids.overlaps(block) for r in reserved)
        ):
            taken.append((name, block))
    still_free = {name for name, _ in taken}
    kept = {n: b for n, b in kept.items() if n in still_free}
    explicit = [(n, w) for n, w in wants.items() if isinstance(w, IdRange)]
    # Ranges units already had go first, then new ones in name order (sorted is stable).
    explicit.sort(key=lambda item: before.get(item[0]) != item[1])
    for name, pinned in explicit:
        problem = next((str(r) for r in reserved if r.ids.overlaps(pinned)), None)
        if problem is None:
            problem = next((f'the range of unit "{u}" ({r})' for u, r in taken
                            if r.overlaps(pinned)), None)  # fmt: skip
        if problem is not None:
            message = f"{pinned} overlaps {problem}"
            out.errors[name] = [UnitError(specs[name].path, KEY, message)]
            continue
        taken.append((name, pinned))
        out.ranges[name] = pinned
    # The aligned blocks anything taken touches: one set lookup per block of the pool.
    covered = {i for _, r in taken for i in range(r.base // BLOCK, r.end // BLOCK + 1)}
    free = (b for b in _blocks(pool) if not any(r.ids.overlaps(b) for r in reserved))
    for name, want in wants.items():
        if want != "pick":
            continue
        if name in kept:
            out.ranges[name] = IdRange(kept[name], BLOCK)
            out.picks[name] = kept[name]
            continue
        found = next((b for b in free if b.base // BLOCK not in covered), None)
        if found is None:
            message = f"no free block of {BLOCK} ids left in userns_pool {pool}"
            out.errors[name] = [UnitError(specs[name].path, KEY, message)]
            continue
        covered.add(found.base // BLOCK)
        out.ranges[name] = found
        out.picks[name] = found.base
        out.new.append(name)
    return out
