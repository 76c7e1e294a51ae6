"""The daemon's cyclic garbage collector settings (issue 23: a reload at 5000 units).

Why: a daemon with 5000 units holds over a million objects the cyclic collector tracks (specs,
runners, their tasks and callbacks), nearly all of which live as long as their unit. With
CPython's defaults (700, 10, 10) a full (generation 2) collection walks every one of them each
time enough survivors have piled up, and a reload allocates enough to set one off: measured at
70-340 ms each in a 5000-unit daemon, several inside one reload. Python frees most garbage by
reference counting at once; the cyclic collector only finds cycles, which the long-lived units
are not becoming.

So: `configure` once at start raises the young generation's threshold (fewer, larger young
collections: the same work per object, a tenth of the calls), and `settle`, after the units are
loaded and after every reload, collects what is garbage now and then freezes the survivors
(`gc.freeze`: moved to the permanent generation, which no later collection walks). A
collection then walks only what was made since the last settle: the per-reload and per-launch
objects, not the 5000 units.

Cycles made after a freeze are collected as before (tests/unit/test_gcpolicy.py). What a freeze
gives up: a frozen object that later becomes part of garbage cycle (a removed unit's runner) is
not collected while it stays frozen. `settle` bounds that: once the frozen set has grown by half
since the last full collection, it unfreezes everything and does one full collection (a
compaction), so frozen garbage never exceeds half of what was live at the last compaction, at
the cost of one full walk per that much growth.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

from supervisor.log import get_logger

log = get_logger()

# Young collections every 10 000 net new tracked objects, not 700: a storm of launches or a
# reload makes tens of thousands, most freed by reference counting before any collection.
THRESHOLDS = (10_000, 10, 10)
# A compaction (full collection of everything) once the frozen set has grown by this fraction.
COMPACT_GROWTH = 0.5


@dataclass
class _Frozen:
    baseline: int | None = None  # frozen objects right after the last compaction (None: none)


_STATE = _Frozen()


def configure() -> None:
    """The daemon's thresholds; called once, before the units are loaded."""
    gc.set_threshold(*THRESHOLDS)


def settle() -> None:
    """After a load or a reload: collect the garbage among the objects made since the last
    settle, freeze the survivors; compact when the frozen set has grown enough (module doc)."""
    baseline = _STATE.baseline
    if baseline is not None:
        gc.collect()  # the unfrozen objects only: those made since the last settle
        gc.freeze()
        if gc.get_freeze_count() <= baseline * (1 + COMPACT_GROWTH):
            return
    _compact()


def _compact() -> None:
    began = time.process_time()
    gc.unfreeze()
    freed = gc.collect()
    gc.freeze()
    _STATE.baseline = gc.get_freeze_count()
    log.info("daemon.gc_compacted", frozen=_STATE.baseline, freed=freed,
             threshold=list(gc.get_threshold()),
             cpu_ms=round((time.process_time() - began) * 1000, 1))  # fmt: skip


def reset() -> None:
    """Back to CPython's defaults, nothing frozen (tests)."""
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    _STATE.baseline = None
