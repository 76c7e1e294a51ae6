"""The root part of a launch plan, planned once per unit revision and host state.

Planning a root (rootplan.root_paths, rootplan.plan_root, holdplan.hold_sources) is pure: the
same `RootSpec` and the same `HostLayout` give the same operations. What changes between two
launches of a unit is the host, so the host is still probed at every launch (a bind source
removed, a path that became a symlink, a remount read-only, an edited /etc/passwd: each shows
in the probe and makes the launch plan afresh, and fail with the same clear error as before);
only the pure planning is skipped when both the spec and the probed facts equal the last ones.

A unit's edited file, image or root gives a different `RootSpec` (a new key); the entries are
few and bounded (least recently used dropped first), so a daemon with thousands of units keeps
a handful of plans, not one per unit. The same ops tuple for the same inputs is also what lets
the encoder send it by reference (wire/plancodec.py). The entries also share one probed host
while it is unchanged (`_shared`): each probe is ~11 KiB of small objects, so 128 entries with
a host each held ~1.4 MB of the daemon's heap for what is, between two host changes, one fact.

Units that differ only by their hostname (a storm of units made from one template) share the
planning too: the hostname is in no part of a plan but a host root's own /etc/hostname and
/etc/hosts (rootplan.own_etc_files), so the plan of another unit with the same spec otherwise,
made on the same host, becomes this unit's by swapping those two files' content: about a
tenth of planning it (1000 starts in a row planned 1000 roots, ~0.8 ms of the daemon's CPU each).

The same holds for a host root's skeleton (rootplan.root_skeleton_entries: what the shared
snapshot directory of etcsnap.py must hold), which every launch needs before the plan is looked
up, to find its snapshot: it names paths only, never the hostname's content, so it is kept per
spec but its hostname and recomputed whenever the probed host differs (`skeleton`). It was
~40 % of the daemon's plan at every launch of a storm.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from supervisor.sandbox.host import holdplan, hostlayout, rootplan
from supervisor.sandbox.wire.mounts import Hold, Op, RootSpec, SegmentedOps, WriteFile

_T = TypeVar("_T")

# Launch-time plans worth keeping: the units launched most recently (restarts, a storm's
# burst). Each is a few dozen small frozen objects.
MAX_ENTRIES = 128

Skeleton = tuple[rootplan.SnapshotEntry, ...]
# A spec and its probed host, completed from the probe before planning (see plan()).
Prepare = Callable[[RootSpec, hostlayout.HostLayout], tuple[RootSpec, hostlayout.HostLayout]]


@dataclass(frozen=True)
class RootPlan:
    """The root's operations (for PID 1), its staging directory and the launcher's holds."""

    ops: tuple[Op, ...]
    staging: str
    holds: tuple[Hold, ...]


@dataclass
class _Entry:
    probed: hostlayout.HostLayout  # the host as probed, before the root directory's paths
    paths: list[str]  # rootplan.root_paths for `probed`
    layout: hostlayout.HostLayout  # `probed` plus those paths, what the plan was made from
    plan: RootPlan


@dataclass
class _Named:
    """A plan as made for one hostname, for units whose specs differ from it by that alone."""

    hostname: str
    layout: hostlayout.HostLayout
    plan: RootPlan


class RootPlanCache:
    """`plan(spec)`: probe the host, and plan the root unless spec and host are unchanged."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[RootSpec, _Entry] = OrderedDict()
        self._by_spec_but_hostname: OrderedDict[RootSpec, _Named] = OrderedDict()
        # spec but its hostname -> (the host it was made on, the skeleton)
        self._skeletons: OrderedDict[RootSpec, tuple[hostlayout.HostLayout, Skeleton]] = (
            OrderedDict()
        )
        self._max = max_entries
        # The host as last probed (and prepared), which every plan made since shares.
        self._last_host: hostlayout.HostLayout | None = None
        self.hits = self.misses = 0  # for tests and the bench: did the cache serve a plan?
        self.renamed = 0  # of the misses: another hostname's plan, renamed

    def plan(
        self,
        spec: RootSpec,
        host: hostlayout.HostLayout | None = None,
        prepare: Prepare | None = None,
    ) -> RootPlan:
        """The root plan for `spec` on `host` (None: probed now). `prepare` may complete both
        from the probe before the plan is looked up (launch.py: a host root's shared /etc
        snapshot). Raises StageFailure, as the planning does, for a root that cannot be built."""
        if host is None:
            extra = rootplan.bind_sources(spec) + ([spec.root] if spec.root != "host" else [])
            host = hostlayout.HostLayout.probe(extra, spec.root == "host" and not spec.layers)
        if prepare is not None:
            spec, host = prepare(spec, host)
        host = self._shared(host)
        entry = self._entries.get(spec)
        probed = host
        paths = entry.paths if entry and entry.probed == probed else rootplan.root_paths(spec, host)
        if paths:
            host = host.with_root_paths(spec.root, paths)
        if entry is not None and entry.layout == host:
            self._entries.move_to_end(spec)
            self.hits += 1
            return entry.plan
        self.misses += 1
        plan = self._named(spec, host)
        _put(self._entries, spec, _Entry(probed, paths, host, plan), self._max)
        return plan

    def _shared(self, host: hostlayout.HostLayout) -> hostlayout.HostLayout:
        """`host`, or the equal layout the last launch probed: the entries then hold one
        layout, not one per unit (the comparison is the one the lookup makes anyway)."""
        last = self._last_host
        if last is not None and last == host:
            return last
        self._last_host = host
        return host

    def _named(self, spec: RootSpec, host: hostlayout.HostLayout) -> RootPlan:
        """The plan of `spec` on `host`: another hostname's, renamed, if one was made on the
        same host, else made now (in segments, for the next such unit to share)."""
        key = replace(spec, hostname="")
        named = self._by_spec_but_hostname.get(key)
        if named is not None and named.layout == host:
            self._by_spec_but_hostname.move_to_end(key)
            self.renamed += 1
            return _renamed(named.plan, named.hostname, spec.hostname)
        plan = _segmented(_plan(spec, host), spec.hostname)
        _put(self._by_spec_but_hostname, key, _Named(spec.hostname, host, plan), self._max)
        return plan

    def skeleton(self, spec: RootSpec, host: hostlayout.HostLayout) -> Skeleton:
        """rootplan.root_skeleton_entries(spec, host), made again only when `host` (the probe
        of this launch) differs from the one it was made on, or the spec does otherwise than
        by its hostname (which the skeleton has placeholders for, never content)."""
        key = replace(spec, hostname="")
        kept = self._skeletons.get(key)
        if kept is not None and kept[0] == host:
            self._skeletons.move_to_end(key)
            return kept[1]
        made = rootplan.root_skeleton_entries(spec, host)
        _put(self._skeletons, key, (host, made), self._max)
        return made

    def clear(self) -> None:
        self._entries.clear()
        self._last_host = None
        self._by_spec_but_hostname.clear()
        self._skeletons.clear()


def _put(entries: OrderedDict[RootSpec, _T], key: RootSpec, value: _T, most: int) -> None:
    entries[key] = value
    entries.move_to_end(key)
    while len(entries) > most:
        entries.popitem(last=False)


def _own_file(op: Op, own: dict[str, bytes]) -> bytes | None:
    """What `op` writes if it writes the unit's own /etc/hostname or /etc/hosts (in /etc, or
    beside it to be bound there) with the content in `own` (name -> content), else None."""
    if not isinstance(op, WriteFile):
        return None
    where, _, base = op.path.rpartition("/")
    if not (base.startswith(rootplan.OWN_ETC_PREFIX) or where.endswith("/etc")):
        return None
    data = own.get(base.removeprefix(rootplan.OWN_ETC_PREFIX))
    return data if data == op.data else None


def _segmented(plan: RootPlan, hostname: str) -> RootPlan:
    """`plan` with its ops in three segments: before its own files, from the first to the
    last of them, after; the first and last are what the plans renamed from it share. A plan
    without own files is the same for every hostname: it is shared whole."""
    own = dict(rootplan.own_etc_files(hostname))
    at = [i for i, op in enumerate(plan.ops) if _own_file(op, own) is not None]
    if not at:
        return plan
    ops = plan.ops
    parts = (ops[: at[0]], ops[at[0] : at[-1] + 1], ops[at[-1] + 1 :])
    return replace(plan, ops=SegmentedOps(parts))


def _renamed(plan: RootPlan, old: str, new: str) -> RootPlan:
    """`plan`, made for hostname `old` (by _segmented), for hostname `new`: its own files get
    `new`'s content; nothing else in a plan names the hostname, and the segments around them
    are the very same tuples."""
    if old == new or not isinstance(plan.ops, SegmentedOps):
        return plan
    was, now = dict(rootplan.own_etc_files(old)), dict(rootplan.own_etc_files(new))

    def renamed(op: Op) -> Op:
        if _own_file(op, was) is None:
            return op
        assert isinstance(op, WriteFile)  # _own_file says so
        name = op.path.rpartition("/")[2].removeprefix(rootplan.OWN_ETC_PREFIX)
        return WriteFile(op.path, now[name])

    before, own, after = plan.ops.segments
    return replace(plan, ops=SegmentedOps((before, tuple(renamed(op) for op in own), after)))


def _plan(spec: RootSpec, host: hostlayout.HostLayout) -> RootPlan:
    ops = rootplan.plan_root(spec, host)
    staging = ""
    holds: tuple[Hold, ...] = ()  # without a user namespace PID 1 opens every source
    if spec.userns:
        staging = rootplan.staging_dir(spec, host)
        ops, holds = holdplan.hold_sources(ops, spec, staging)
    return RootPlan(tuple(ops), staging, holds)


CACHE = RootPlanCache()  # the process's own (the daemon's, or a bench's)
