"""The daemon's cyclic garbage collector settings (issue 23: a reload at 5000 units).

Why: a daemon with 5000 units holds over a million objects the cyclic collector tracks (specs,
runners, their tasks and callbacks), nearly all of which live as long as their unit. With
CPython's defaults (700, 10, 10) a full (generation 2) collection walks every one of them each
time enough survivors have piled up, and a reload allocates enough to set one off: measured at
70-340 ms each in a 5000-unit daemon, several inside one reload. Python frees most garbage by
reference counting at once; the cyclic collector only finds cycles, which the long-lived units
are not becoming.

So: `configure` once at start raises the young generation's threshold (fewer, larger young
collections: the same work per object, a tenth of the calls), and `settle`, after the units
are loaded, after every reload and once launches have stopped, freezes everything tracked so
far (`gc.freeze`: moved to the permanent generation, which no later collection walks; no walk
itself, so the reload's answer does not wait for it). A collection then walks only what was
made since the last settle, not the 5000 units and their runs.

Cycles made after a freeze are collected as before (tests/unit/test_gcpolicy.py). What a freeze
gives up: a garbage cycle frozen with the survivors, or a frozen object that later becomes part
of one (a removed unit's runner), is not collected while it stays frozen. `compact` (unfreeze,
one full collection, freeze) frees them; it is due at the first settle and whenever the frozen
set has grown by half since the last compaction, so frozen garbage never exceeds half of what
was live then, at the cost of one full walk per that much growth. The daemon runs the first at
once, before the first load's launches begin, and later ones a moment after the settle that
made them due (daemon.tune_gc), once a reload has been answered.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

from supervisor.linux import heap
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
    # Frozen objects now, counted as they are frozen: gc.get_freeze_count() walks the whole
    # permanent generation (a million objects at 5000 units), which a settle must not do.
    count: int = 0


_STATE = _Frozen()


def configure() -> None:
    """The daemon's thresholds; called once, before the units are loaded."""
    gc.set_threshold(*THRESHOLDS)


def settle() -> bool:
    """After a load or a reload: freeze everything tracked so far (no walk: a garbage cycle
    frozen with the survivors waits for the next compaction). True when a compaction is due:
    none yet, or the frozen set has grown by half since the last (module doc)."""
    _STATE.count += len(gc.get_objects())  # the unfrozen ones only: those made since
    gc.freeze()
    baseline = _STATE.baseline
    return baseline is None or _STATE.count > baseline * (1 + COMPACT_GROWTH)


def compact() -> None:
    """Unfreeze, one full collection, freeze again: frees the frozen garbage cycles. Then the C
    heap's free pages go back to the kernel (linux/heap.py): what a storm or a reload freed
    below the long-lived objects stayed resident otherwise (~1 MB at 300 units)."""
    began = time.process_time()
    gc.unfreeze()
    freed = gc.collect()
    gc.freeze()
    _STATE.baseline = _STATE.count = gc.get_freeze_count()  # a full walk, as the collection
    trimmed = heap.trim()
    log.info("daemon.gc_compacted", frozen=_STATE.baseline, freed=freed,
             threshold=list(gc.get_threshold()), heap_trimmed=trimmed,
             cpu_ms=round((time.process_time() - began) * 1000, 1))  # fmt: skip


def reset() -> None:
    """Back to CPython's defaults, nothing frozen (tests)."""
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    _STATE.baseline, _STATE.count = None, 0
