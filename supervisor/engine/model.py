"""What the engine shows the outside world: unit status, events, reload results.

The control API and sandboxctl depend on these types and on the `Controller` protocol only,
never on engine internals, so the HTTP layer can be tested against a fake controller and the
engine can change without breaking the contract's JSON.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from supervisor.contract import HealthState

# A unit's [network] as status shows it: mode; for bridge mode address, mac, bridge, gateway,
# outbound and ports.
NetworkView = dict[str, str | bool | list[str] | None]


# slots: each unit keeps its RECENT_EVENTS events for its life, and a __dict__ was ~100 bytes
# of each (issue 23: the daemon's heap per unit).
@dataclass(frozen=True, slots=True)
class UnitEvent:
    """One lifecycle event of a unit (also streamed by the API)."""

    unit: str
    event: str  # e.g. "started", "exited", "oom_kill", "backoff" (all: docs/control.md)
    at: dt.datetime
    state: str
    detail: dict[str, Any] = field(default_factory=dict)
    # The engine's number for it: 1, 2, 3, ... in the order it was published, for the life of
    # one daemon (0: not published by an engine). The API's `seq`.
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        data = {
            "unit": self.unit,
            "event": self.event,
            "at": self.at.isoformat(),
            "state": self.state,
            "detail": self.detail,
        }
        return {"seq": self.seq, **data} if self.seq else data


@dataclass(frozen=True, slots=True)  # one per unit in every status and list view
class UnitStatus:
    """A snapshot of one unit. `to_json` is the stable `status --json` element
    (docs/control.md: keys may be added, never removed or renamed)."""

    name: str
    state: str  # supervisor.contract.State value
    pid: int | None
    restarts: int
    last_exit: str | None  # exit-code:N, signal:NAME, oom-killed, launch-error:..., lost
    oom_kills: int
    memory_bytes: int | None
    started_at: dt.datetime | None
    error: str | None  # why the unit is failed/invalid/in backoff, in words
    health: HealthState | None
    # Beyond the contract's minimum; may grow, never shrink.
    next_start_in: float | None = None  # seconds until a start out of backoff
    uptime: float | None = None  # seconds the current run has run, on the monotonic clock
    # The unit file is invalid now, and the last valid version is what runs (or would).
    file_invalid: bool = False
    network: NetworkView | None = None  # mode; bridge: address, mac, bridge, gateway, ports
    spec_hash: str | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    recent_events: list[UnitEvent] = field(default_factory=list)
    recent_exits: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, detail: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "oom_kills": self.oom_kills,
            "memory_bytes": self.memory_bytes,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "error": self.error,
            "health": self.health,
            "next_start_in": self.next_start_in,
            "uptime": self.uptime,
            "file_invalid": self.file_invalid,
            "network": self.network,
        }
        if detail:
            data.update(
                spec_hash=self.spec_hash,
                limits=self.limits,
                usage=self.usage,
                recent_events=[e.to_json() for e in self.recent_events],
                recent_exits=list(self.recent_exits),
                **self.extra,
            )
        return data


@dataclass(frozen=True)
class TopFrame:
    """Every unit's counters at one instant, for `sandboxctl top` (GET /v1/top)."""

    # The daemon's monotonic clock when the frame was read: rates are differences of two
    # frames over the difference of their `monotonic`, immune to wall clock steps.
    monotonic: float
    at: dt.datetime
    units: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"monotonic": self.monotonic, "at": self.at.isoformat(), "units": self.units}


@dataclass(frozen=True)
class ReloadResult:
    started: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)  # resource-only changes applied live
    stopped: list[str] = field(default_factory=list)  # file gone: its run is being stopped
    unchanged: list[str] = field(default_factory=list)
    invalid: dict[str, list[str]] = field(default_factory=dict)  # unit -> error lines
    # New or changed units taken in without a start: autostart = false, or stopped by an
    # operator (reload never undoes an explicit stop); they use the new spec on their next start.
    deferred: list[str] = field(default_factory=list)
    # File gone, nothing to stop: it never ran (invalid) or its run had already ended.
    removed: list[str] = field(default_factory=list)
    # Invalid before, valid again and the same as the version that runs: no change to apply
    # (also in `unchanged`).
    fixed: list[str] = field(default_factory=list)
    # The newest event's seq when the reload began to act: what it caused comes after, so a
    # client follows `events?since=seq` to learn how the units it started fared.
    seq: int = 0

    @property
    def ok(self) -> bool:
        return not self.invalid

    def to_json(self) -> dict[str, Any]:
        """`asdict(self)` and `ok`, built field by field: asdict deep-copies each of the 5000
        names in `unchanged` one by one, ~4 ms of a 5000-unit reload's answer (issue 23)."""
        out: dict[str, Any] = {}
        for name in _RELOAD_FIELDS:
            value = getattr(self, name)
            if isinstance(value, list):
                value = list(value)
            elif isinstance(value, dict):
                value = {unit: list(lines) for unit, lines in value.items()}
            out[name] = value
        out["ok"] = self.ok
        return out


_RELOAD_FIELDS = tuple(f.name for f in fields(ReloadResult))


class Controller(Protocol):
    """The engine as the control API sees it."""

    def list_units(self, *, detail: bool = False) -> list[UnitStatus]:
        """Every unit, by name. Without `detail` only the fields of the list view are filled
        (`to_json()`), which keeps a status of 1000 units cheap; with it, as `get_unit`."""
        ...

    def list_view(self) -> list[dict[str, Any]]:
        """Every unit's `UnitStatus.to_json()`, by name, built as dicts."""
        ...

    def list_text(self) -> str:
        """GET /v1/units' body: `json.dumps({"units": self.list_view()})`, byte for byte."""
        ...

    def get_unit(self, name: str) -> UnitStatus:
        """Raises supervisor.errors.UnitNotFound."""
        ...

    def top(self) -> TopFrame:
        """Every unit's `top` row, by name, in one pass (a few cgroup files per unit)."""
        ...

    async def reload(self) -> ReloadResult: ...

    async def start(self, name: str) -> UnitStatus:
        """Start (or reset a failed) unit; returns once it is running or has failed."""
        ...

    async def stop(self, name: str) -> UnitStatus: ...

    async def restart(self, name: str) -> UnitStatus: ...

    def events(self) -> AsyncIterator[UnitEvent]:
        """A live stream of events, from now on, until the consumer stops iterating."""
        ...

    async def images(self) -> dict[str, Any]:
        """The images units name, their size on disk and the units on each, and the layers
        no unit uses (`GET /v1/images`, docs/control.md). Raises ImageStoreError."""
        ...

    async def prune_images(self) -> dict[str, Any]:
        """Remove every stored layer no unit uses: `{"removed": N, "freed": bytes}`."""
        ...

    def log_path(self, name: str) -> str:
        """The service output log file of a unit (raises UnitNotFound)."""
        ...

    async def create(
        self, name: str | None, unit: dict[str, Any], remove: bool, start: bool = True
    ) -> tuple[int, UnitStatus]:
        """Make (and, with `start`, start) a transient unit: (the newest event's seq before
        it, the unit). Raises supervisor.errors.InvalidUnit, or SupervisorError (the name is
        taken)."""
        ...

    async def delete(self, name: str) -> None:
        """Stop and remove a transient unit (SupervisorError for a unit with a file)."""
        ...

    def kill(self, name: str, signum: int) -> UnitStatus:
        """Send `signum` to the unit's PID 1 (SupervisorError when it has none)."""
        ...
