"""The daemon's collector settings (supervisor/gcpolicy.py): frozen survivors are left out of
collections, yet cyclic garbage made after a freeze is still freed, and a frozen set that has
grown by half is due a compaction, which frees its garbage cycles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from supervisor import gcpolicy


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def daemon_gc() -> Iterator[None]:
    """The daemon's settings, as `serve` sets them, then CPython's defaults again."""
    before = gc.get_threshold()
    gcpolicy.configure()
    assert gcpolicy.settle()  # the first makes a compaction due, as after the daemon's first load
    gcpolicy.compact()
    try:
        yield
    finally:
        gcpolicy.reset()
        gc.set_threshold(*before)


@pytest.mark.usefixtures("daemon_gc")
def test_the_daemon_thresholds_are_set() -> None:
    assert gc.get_threshold() == gcpolicy.THRESHOLDS
    assert gc.get_freeze_count() > 0  # this interpreter's modules and objects, frozen
    assert gc.isenabled()


@pytest.mark.usefixtures("daemon_gc")
def test_a_cycle_made_after_the_freeze_is_freed_by_the_automatic_collections() -> None:
    gcpolicy.settle()  # the young generation empty: the cycle stays young until it is garbage
    gone = _cycle()
    assert gone() is not None  # garbage, but only the cyclic collector can free it
    # More net new tracked objects than the young threshold: a young collection must run,
    # and the cycle, unfrozen and unreachable, is in it. No gc.collect() call here.
    keep = [[] for _ in range(gcpolicy.THRESHOLDS[0] + 1)]  # type: list[list[int]]
    assert gone() is None
    del keep


@pytest.mark.usefixtures("daemon_gc")
def test_settle_freezes_without_a_walk_and_a_compaction_frees_what_it_froze() -> None:
    gone = _cycle()
    survivor = Node()
    frozen = gc.get_freeze_count()
    assert not gcpolicy.settle()  # grown by far less than half: no compaction due
    assert gc.get_freeze_count() > frozen
    assert not any(o is survivor for o in gc.get_objects())  # frozen: no collection walks it
    gc.collect()
    assert gone() is not None  # frozen garbage: only a compaction frees it
    gcpolicy.compact()
    assert gone() is None
    assert not any(o is survivor for o in gc.get_objects())


@pytest.mark.usefixtures("daemon_gc")
def test_a_compaction_is_due_once_the_frozen_set_has_grown_by_half() -> None:
    dead = Node()
    dead.other = Node()
    dead.other.other = dead
    gone = weakref.ref(dead)
    assert not gcpolicy.settle()  # frozen while alive (a unit's runner)
    del dead  # the unit removed: a frozen cycle, not collected while frozen
    gc.collect()
    assert gone() is not None
    # The daemon grows (units added, reloads): once by more than half, a compaction is due.
    frozen = gc.get_freeze_count()
    grown = [Node() for _ in range(int(frozen * gcpolicy.COMPACT_GROWTH) + 1)]
    assert gcpolicy.settle()
    gcpolicy.compact()
    assert gone() is None
    assert not gcpolicy.settle()  # measured from the compaction's size again
    del grown
