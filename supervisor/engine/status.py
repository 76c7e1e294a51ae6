"""Views of a unit runner: the API's UnitStatus, the state file's UnitRecord, and back.

Kept apart from the state machine so that the runner reads as transitions only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from supervisor.cgroups import UnitCgroup
from supervisor.contract import State
from supervisor.engine.model import NetworkView, UnitStatus
from supervisor.engine.run import output_of
from supervisor.engine.store import UnitRecord
from supervisor.errors import CgroupError
from supervisor.images.oci import Image
from supervisor.unit.schema import UnitFile
from supervisor.unit.spec import UnitSpec

if TYPE_CHECKING:
    from supervisor.engine.run import Run
    from supervisor.engine.runner_base import RunnerBase as UnitRunner


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def record(r: UnitRunner) -> UnitRecord:
    run = r.run
    return UnitRecord(
        unit=r.name,
        state=r.state.value,
        spec=r.spec.to_json() if r.spec else None,
        spec_hash=r.spec.hash if r.spec else None,
        restart_hash=r.spec.restart_hash if r.spec else None,
        pid=run.pid if run else None,
        pid_start=run.pid_start if run else None,
        started_at=run.started_at if run else None,
        restarts=r.restarts,
        last_exit=r.last_exit,
        recent_exits=list(r.recent_exits),
        oom_kills=r.oom_kills,
        oom_base=run.oom_base + r.oom_accounted if run else 0,
        output_fd=run.capture.kept_fd if run and run.capture else None,
        output_inode=run.capture.inode if run and run.capture else None,
        error_fd=run.err_capture.kept_fd if run and run.err_capture else None,
        error_inode=run.err_capture.inode if run and run.err_capture else None,
        output=run.output if run else None,
        intent=None if r.intent is None else r.intent.value,
        listen=r.listeners.record() if run else [],
    )


def spec_from_json(
    data: dict[str, Any] | None, hashes: tuple[str | None, str | None] = (None, None)
) -> UnitSpec | None:
    """The UnitSpec a state file recorded (None if absent or no longer valid). `hashes`, the
    recorded ones, stand for a unit with credentials, whose contents the record never holds."""
    if not data:
        return None
    fields = dict(data)
    name, path = fields.pop("name", None), fields.pop("path", "")
    image = fields.pop("image", None)
    template, dropins = fields.pop("template", None), fields.pop("dropins", None) or []
    try:
        recorded = Image.from_json(image) if isinstance(image, dict) else None
        unit = UnitFile.model_validate(fields)
        known = (hashes[0], hashes[1]) if hashes[0] and hashes[1] else None
        return UnitSpec(
            str(name),
            str(path),
            unit,
            recorded,
            template=str(template) if template else None,
            dropins=tuple(str(d) for d in dropins),
            recorded_hashes=known,
        )
    except (ValueError, KeyError, TypeError):
        return None


def unit_status(r: UnitRunner, *, detail: bool = True) -> UnitStatus:
    """What the API shows of a unit. `detail=False` is the list view: only the fields of
    `UnitStatus.to_json()` without detail, and one cgroup read instead of five (a list of
    1000 units is read in one request).
    """
    run, spec = r.run, r.spec
    usage = _usage(run) if detail else {}
    summary = UnitStatus(
        name=r.name,
        state=r.state.value,
        pid=run.pid if run else None,
        restarts=r.restarts,
        last_exit=r.last_exit,
        oom_kills=r.oom_kills,
        memory_bytes=usage.get("memory_bytes") if detail else _memory(run),
        started_at=dt.datetime.fromtimestamp(run.started_at, dt.UTC) if run else None,
        error=_error(r),
        health=r.health.state,
        next_start_in=_next_start_in(r),
        uptime=round(run.uptime(), 3) if run else None,
        file_invalid=bool(r.invalid) and spec is not None,
        network=_network(r, spec),
    )
    if not detail:
        return summary
    return dataclasses.replace(
        summary,
        spec_hash=spec.hash if spec else None,
        limits=spec.unit.resources.model_dump(mode="json") if spec else {},
        usage=usage,
        recent_events=list(r.recent_events),
        recent_exits=list(r.recent_exits),
        extra={
            "invalid": list(r.invalid),
            "oom_policy": spec.unit.oom.policy if spec else None,
            **(spec.sources_json() if spec else {}),
            "oom_victims": list(r.oom_victims),
            "waiting_for": r.waiting_for,
            **_dependencies(spec),
            "output_dropped_bytes": r.sink.dropped,
            "output": run.output if run else output_of(r.host, spec) if spec else None,
            "image": _image(spec),
            "userns": None if (ids := r.id_range()) is None else str(ids),
            **r.readiness.view(),
            **r.health.view(),
        },
    )


def list_row(r: UnitRunner, now: float | None = None) -> dict[str, Any]:
    """`unit_status(r, detail=False).to_json()`, the list view's element, built as the dict
    itself: GET /v1/units makes one per unit per request, and a frozen UnitStatus and its
    `to_json` cost more than the rest of the row (issue 23: the list view of 1000 units in
    under 10 ms). `now`, the host's monotonic clock read once for the whole list (every row's
    uptime from the same instant). The common case (no error, not in backoff, no invalid
    file) is answered without the helpers' calls: at 1000 rows a call is ~0.1 ms.
    tests/unit/engine checks the two agree."""
    run, spec, state = r.run, r.spec, r.state
    if now is None:
        now = r.host.monotonic()
    # `_value_`, the member's value without the enum's descriptor (a Python-level property
    # lookup per read in 3.11).
    value = state._value_
    plain = not r.invalid and r.waiting_for is None
    memory, next_start_in, uptime = _changing(r, now)
    return {
        "name": r.name,
        "state": value,
        "pid": run.pid if run else None,
        "restarts": r.restarts,
        "last_exit": r.last_exit,
        "oom_kills": r.oom_kills,
        "memory_bytes": memory,
        "started_at": _iso(run.started_at) if run else None,
        "error": r.error if plain else _error(r),
        "health": r.health.state,
        "next_start_in": next_start_in,
        "uptime": uptime,
        "file_invalid": bool(r.invalid) and spec is not None,
        "network": _network(r, spec),
    }


def _changing(
    r: UnitRunner, now: float, read: Callable[[], int] | None = None
) -> tuple[int | None, float | None, float | None]:
    """A list row's values that change at every request: the run's memory (read live, from
    its cgroup, or through `read`, a kept row's reader of it), next_start_in and uptime."""
    run = r.run
    return (
        _memory(run) if read is None or run is None else _read(read, run),
        None if r.state is not State.BACKOFF else _next_start_in(r),
        round(now - run.started_mono, 3) if run else None,
    )


def _row_key(r: UnitRunner) -> tuple[object, ...] | None:
    """What a plain row (its file valid, its start waiting for no other unit) is made from,
    but its changing values; None for any other, which list_row makes afresh at every request
    (the helpers say its error). The run and the network adapter stand for themselves (a
    tuple compares an object with itself by identity, without calling an `__eq__`), the spec
    by its id (a frozen dataclass: one equal but not the same would be compared field by
    field at every request; the kept row holds the spec, so its id is not reused meanwhile).
    A changed file is a new spec, a restart a new run, whose cgroup the row's memory reader
    is bound to. The network view is in it only where it changes without them (a bridge
    unit's lease): a view is a dict made per call (and for a bridge unit, addresses parsed),
    which was a fifth of a kept row's cost."""
    if r.invalid or r.waiting_for is not None:
        return None
    run, spec, network = r.run, r.spec, r.network
    leased = (network.view(spec) if network is not None and spec is not None
              and spec.unit.network.mode == "bridge" else None)  # fmt: skip
    if run is None:
        return (r.state, None, None, None, None, r.restarts, r.last_exit, r.oom_kills,
                r.error, r.health.state, id(spec), network, leased)  # fmt: skip
    return (r.state, run, run.cgroup, run.pid, run.started_at, r.restarts, r.last_exit,
            r.oom_kills, r.error, r.health.state, id(spec), network, leased)  # fmt: skip


# Where a row's changing numbers go in its JSON text: after the keys before them, as
# json.dumps writes a row (", " and ": "). Outside a string a quote is never escaped, so these
# can not be found inside a value.
_MEMORY = ', "memory_bytes": '
_CLOCKS = (', "next_start_in": ', ', "uptime": ')

# A kept row: its key, and its text around the changing values: up to memory_bytes' value,
# from there up to next_start_in's, from there to uptime's (next_start_in null: a running or
# stopped unit, the common case), and the rest; with its run's memory reader (None: no run,
# or no cgroup to read) and the spec it was made from (held: `_row_key` has its id).
_Kept = tuple[
    tuple[object, ...] | None, str, str, str, str, Callable[[], int] | None, UnitSpec | None
]


class ListText:
    """GET /v1/units as JSON text, byte for byte `json.dumps({"units": rows})`, with each row's
    text kept between requests: a row's memory and uptime change at every request, the rest
    only when its unit's state does, and encoding 1000 rows afresh was 3 ms of the list view's
    10 (issue 23). A row's kept text is used while the values it was made from compare equal
    (`_row_key`, one tuple comparison: nothing to invalidate by hand, whichever code changed
    the runner; a row's dict is built only when it changed, which at 5000 rows was most of
    the view's cost); the cache holds the units of the latest list only. Memory is read live
    at every request, through the run's cgroup reader kept with the row (a kept file: one
    pread), where four calls down to it were a quarter of a kept row's cost."""

    def __init__(self) -> None:
        self._rows: dict[str, _Kept] = {}

    def text(self, runners: Iterable[UnitRunner], now: float) -> str:
        kept, rows = self._rows, []
        fresh: dict[str, _Kept] = {}
        backoff = State.BACKOFF
        for r in runners:
            key = _row_key(r)
            hit = kept.get(r.name)
            run = r.run
            if key is None or hit is None or hit[0] != key:
                row = list_row(r, now)
                memory, next_start_in = row.pop("memory_bytes"), row.pop("next_start_in")
                uptime = row.pop("uptime")
                hit = fresh[r.name] = _kept(r, key, row)
                _, head, middle, _, tail, _, _ = hit
            else:
                fresh[r.name] = hit
                _, head, middle, running, tail, read, _ = hit
                if run is not None and r.state is not backoff:
                    # The common row, inline: this loop runs 1000 times per request and a
                    # call per row showed (issue 23). A float's repr is json.dumps' spelling
                    # (finite: a difference of clocks).
                    memory = _read(read, run)
                    rows.append(f"{head}{'null' if memory is None else memory}{running}"
                                f"{round(now - run.started_mono, 3)!r}{tail}")  # fmt: skip
                    continue
                memory, next_start_in, uptime = _changing(r, now, read)
            rows.append(f"{head}{_number(memory)}{middle}{_number(next_start_in)}{_CLOCKS[1]}"
                        f"{_number(uptime)}{tail}")  # fmt: skip
        self._rows = fresh
        return '{"units": [' + ", ".join(rows) + "]}"


def _kept(r: UnitRunner, key: tuple[object, ...] | None, row: dict[str, Any]) -> _Kept:
    """A row to keep, from `row` (list_row's, its changing values taken out): its pieces of
    text, and the reader of its run's memory."""
    head, middle, tail = _pieces(row)
    cgroup = _live_cgroup(r.run)
    read = cgroup.memory_reader() if cgroup is not None else None
    return (key, head + _MEMORY, middle + _CLOCKS[0], f"{middle}{_CLOCKS[0]}null{_CLOCKS[1]}",
            tail, read, r.spec)  # fmt: skip


def _read(read: Callable[[], int] | None, run: Run) -> int | None:
    """A run's memory, read now: None once the run has ended (its cgroup goes with it) or
    when the read fails, as `_memory`."""
    if read is None or run.ended:
        return None
    try:
        return read()
    except (CgroupError, OSError):
        return None  # the cgroup went with its run


def _pieces(row: dict[str, Any]) -> tuple[str, str, str]:
    """A row's JSON text without its three changing values: before memory_bytes, between it
    and next_start_in, after uptime."""
    whole: dict[str, Any] = {}
    for key, value in row.items():  # the keys in list_row's order, the changing ones null
        whole[key] = value
        if key == "oom_kills":
            whole["memory_bytes"] = None
        elif key == "health":
            whole["next_start_in"] = whole["uptime"] = None
    text = json.dumps(whole)
    head, _, rest = text.partition(f"{_MEMORY}null")
    middle, _, tail = rest.partition(f"{_CLOCKS[0]}null{_CLOCKS[1]}null")
    return head, middle, tail


def _number(value: float | None) -> str:
    """A number as json.dumps writes it: null, an int's repr, a finite float's repr."""
    if value is None:
        return "null"
    if value.__class__ is float and value - value != 0.0:  # inf or nan: json's own spelling
        return json.dumps(value)
    return repr(value)


@functools.lru_cache(maxsize=16384)
def _iso(started_at: float) -> str:
    """A run's start as the list view shows it: the same for every request while the run
    lasts, so made once (a datetime and its isoformat were a fifth of a list row's cost);
    bounded, so restarts never grow it."""
    return dt.datetime.fromtimestamp(started_at, dt.UTC).isoformat()


def _error(r: UnitRunner) -> str | None:
    if r.invalid:
        kept = " (the running version is kept)" if r.spec is not None else ""
        return f"invalid unit file{kept}: " + "; ".join(r.invalid)
    if r.waiting_for is not None and r.state is State.STARTING:
        return r.waiting_for
    return r.error


def _next_start_in(r: UnitRunner) -> float | None:
    if r.state is not State.BACKOFF:
        return None
    return round(max(0.0, r.next_start - r.host.monotonic()), 3)


def _dependencies(spec: UnitSpec | None) -> dict[str, list[str]]:
    """The units this one names; the reverse edges come from the reconciler (it has them all)."""
    service = spec.unit.service if spec else None
    return {k: list(getattr(service, k)) if service else [] for k in ("requires", "wants", "after")}


def _image(spec: UnitSpec | None) -> dict[str, Any] | None:
    """The image the unit runs from, as loaded: what `status UNIT` shows of it."""
    if spec is None or spec.image is None:
        return None
    image = spec.image
    return {
        "ref": image.ref,
        "digest": image.digest,
        "layers": [layer.diff_id for layer in image.layers],
        "exposed_ports": list(image.config.exposed_ports),
    }


def _network(r: UnitRunner, spec: UnitSpec | None) -> NetworkView | None:
    if spec is None:
        return None
    if r.network is None:  # a daemon without networking (tests): the mode is still known
        return {"mode": spec.unit.network.mode}
    return r.network.view(spec)


def _live_cgroup(run: Run | None) -> UnitCgroup | None:
    return None if run is None or run.ended else run.cgroup


def _memory(run: Run | None) -> int | None:
    cgroup = _live_cgroup(run)
    return None if run is None or cgroup is None else _read(cgroup.memory_current, run)


def _usage(run: Run | None) -> dict[str, Any]:
    cgroup = _live_cgroup(run)
    if run is None or cgroup is None:
        return {}
    try:
        stats = cgroup.stats()
    except (CgroupError, OSError):
        return {}
    return {
        "memory_bytes": stats.memory_current,
        "memory_peak_bytes": stats.memory_peak,
        "cpu_usage_usec": stats.cpu_usage_usec,
        "pids": stats.pids_current,
        "oom_kills_this_run": run.oom_kills,
        "io_read_bytes": stats.io_read_bytes,
        "io_write_bytes": stats.io_write_bytes,
        # None (JSON null) where the kernel keeps none (cgroup v1): absent, not zero.
        "pressure": stats.pressure,
    }


def top_row(r: UnitRunner) -> dict[str, Any]:
    """One unit in a `top` frame: counters and gauges, never rates (the client has two
    frames and the time between them; the daemon keeps no history per viewer)."""
    run, spec = r.run, r.spec
    row: dict[str, Any] = {
        "name": r.name,
        "state": r.state.value,
        "pid": run.pid if run else None,
        "restarts": r.restarts,
        "health": r.health.state,
        "memory_max": spec.unit.resources.memory_max if spec else None,
        "memory_bytes": None,
        "cpu_usage_usec": None,
        "pids": None,
        "io_read_bytes": None,
        "io_write_bytes": None,
        "memory_pressure": None,
    }
    cgroup = _live_cgroup(run)
    if cgroup is None:
        return row
    try:
        sample = cgroup.sample()
    except (CgroupError, OSError):
        return row  # the cgroup went with its run
    row.update(
        memory_bytes=sample.memory_current,
        cpu_usage_usec=sample.cpu_usage_usec,
        pids=sample.pids_current,
        io_read_bytes=sample.io_read_bytes,
        io_write_bytes=sample.io_write_bytes,
        memory_pressure=sample.memory_pressure,
    )
    return row
