"""A fake `Controller` for tests and benchmarks of the API and sandboxctl (no engine, no root).

Like structlog.testing: it ships with the package so every test layer and the benchmark share
one fake, and the engine's tests can compare it with the real thing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from supervisor.api import auth
from supervisor.api.events import EventLog
from supervisor.api.server import Server, serve_on
from supervisor.contract import State
from supervisor.engine.model import ReloadResult, TopFrame, UnitEvent, UnitStatus
from supervisor.errors import InvalidUnit, SupervisorError, UnitNotFound

T = TypeVar("T")
BRIDGE = {
    "mode": "bridge", "address": "10.88.0.2/16", "mac": "02:5b:0a:58:00:02", "bridge": "sbx0",
    "gateway": "10.88.0.1",
}  # fmt: skip
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def make_status(
    name: str, state: str = "running", pid: int | None = 4242, **kw: object
) -> UnitStatus:
    fields: dict[str, object] = {
        "name": name,
        "state": state,
        "pid": pid if state in ("running", "starting", "stopping") else None,
        "restarts": 0,
        "last_exit": None,
        "oom_kills": 0,
        "memory_bytes": 12 << 20 if state == State.RUNNING.value else None,
        "started_at": EPOCH if state == State.RUNNING.value else None,
        "error": None,
        "health": None,
        "limits": {"memory_max": 256 << 20, "pids_max": 1024, "cpu_max": 0.5},
        "usage": {"memory_bytes": 12 << 20, "cpu_usage_usec": 1_500_000, "pids": 3},
        "network": {"mode": "none"},
    }
    fields.update(kw)
    return UnitStatus(**fields)  # type: ignore[arg-type]


def top_row(status: UnitStatus, **kw: object) -> dict[str, Any]:
    """A `top` row as the engine builds one, from a status's usage and limits."""
    usage = status.usage if status.state == State.RUNNING.value else {}
    row: dict[str, Any] = {
        "name": status.name,
        "state": status.state,
        "pid": status.pid,
        "restarts": status.restarts,
        "health": status.health,
        "memory_max": status.limits.get("memory_max"),
        "memory_bytes": usage.get("memory_bytes"),
        "cpu_usage_usec": usage.get("cpu_usage_usec"),
        "pids": usage.get("pids"),
        "io_read_bytes": usage.get("io_read_bytes"),
        "io_write_bytes": usage.get("io_write_bytes"),
        "memory_pressure": (usage.get("pressure") or {}).get("memory"),
    }
    row.update(kw)
    return row


class FakeController:
    """Units in a dict; actions flip states and publish events; logs live in `log_dir`."""

    def __init__(self, units: list[UnitStatus], log_dir: Path | None = None) -> None:
        self.units = {u.name: u for u in units}
        self.log_dir = log_dir or Path("/nonexistent")
        self.calls: list[tuple[str, str]] = []
        self.top_frames: list[TopFrame] = []
        self.top_calls = 0
        self.reload_result = ReloadResult(unchanged=sorted(self.units))
        self.reload_events: list[UnitEvent] = []  # what the next reload publishes
        self.action_delay = 0.0
        self.fail: set[str] = set()  # units whose start fails
        self._subscribers: list[asyncio.Queue[UnitEvent]] = []
        self.event_seq = 0
        self.unused_layers = 3  # stored layers no unit uses, until prune_images
        self._rows: dict[str, tuple[UnitStatus, dict[str, Any], str]] = {}  # list_text's

    def list_units(self, *, detail: bool = False) -> list[UnitStatus]:
        units = list(self.units.values())
        return units if detail else self.list_units_of(units)

    @staticmethod
    def list_units_of(units: list[UnitStatus]) -> list[UnitStatus]:
        # As the engine's list view: the detail-only fields are not filled.
        return [dataclasses.replace(u, spec_hash=None, limits={}, usage={}, recent_events=[],
                                    recent_exits=[], extra={}) for u in units]  # fmt: skip

    def list_view(self) -> list[dict[str, Any]]:
        return [self._row(name)[0] for name in sorted(self.units)]

    def list_text(self) -> str:
        """As the engine's: each row's text kept while its unit is the same (a status is
        frozen; a change puts a new one in `units`), so the benchmarks' fake daemon answers a
        list of 1000 units as fast as the engine does, not 3x slower."""
        rows = ", ".join(self._row(name)[1] for name in sorted(self.units))
        return '{"units": [' + rows + "]}"

    def _row(self, name: str) -> tuple[dict[str, Any], str]:
        unit = self.units[name]
        hit = self._rows.get(name)
        if hit is None or hit[0] is not unit:
            row = self.list_units_of([unit])[0].to_json()
            hit = self._rows[name] = (unit, row, json.dumps(row))
        return hit[1], hit[2]

    def top(self) -> TopFrame:
        """The next of `top_frames` if a test queued some (the last one repeats), else a
        frame made from the units' status, one second after the previous one."""
        self.top_calls += 1
        if self.top_frames:
            return self.top_frames.pop(0) if len(self.top_frames) > 1 else self.top_frames[0]
        return TopFrame(float(self.top_calls), EPOCH, [top_row(u) for u in self.units.values()])

    def get_unit(self, name: str) -> UnitStatus:
        try:
            return self.units[name]
        except KeyError:
            raise UnitNotFound(name) from None

    def publish(self, event: UnitEvent) -> None:
        """Number `event` as the engine does and hand it to every subscriber."""
        self.event_seq += 1
        event = dataclasses.replace(event, seq=self.event_seq)
        for queue in self._subscribers:
            queue.put_nowait(event)

    def _set(self, name: str, state: str, event: str) -> UnitStatus:
        old = self.get_unit(name)
        new = make_status(
            name, state, restarts=old.restarts + (event == "restarted"), limits=old.limits
        )
        self.units[name] = new
        self.publish(UnitEvent(name, event, dt.datetime.now(dt.UTC), state))
        return new

    async def reload(self) -> ReloadResult:
        self.calls.append(("reload", ""))
        seq = self.event_seq
        await asyncio.sleep(self.action_delay)
        for event in self.reload_events:
            self.publish(event)
        return dataclasses.replace(self.reload_result, seq=seq)

    async def start(self, name: str) -> UnitStatus:
        self.get_unit(name)
        self.calls.append(("start", name))
        await asyncio.sleep(self.action_delay)
        if name in self.fail:
            self._set(name, "failed", "failed")
            raise SupervisorError(f"{name}: launch failed")
        return self._set(name, "running", "started")

    async def stop(self, name: str) -> UnitStatus:
        self.get_unit(name)
        self.calls.append(("stop", name))
        await asyncio.sleep(self.action_delay)
        return self._set(name, "stopped", "stopped")

    async def restart(self, name: str) -> UnitStatus:
        self.get_unit(name)
        self.calls.append(("restart", name))
        await asyncio.sleep(self.action_delay)
        return self._set(name, "running", "restarted")

    async def events(self) -> AsyncIterator[UnitEvent]:
        queue: asyncio.Queue[UnitEvent] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    async def images(self) -> dict[str, Any]:
        return {
            "images": [{
                "ref": "/var/lib/images/web:1.0", "name": "/var/lib/images/web", "tag": "1.0",
                "digest": "sha256:" + "ab" * 32, "layers": 2, "size": 4 << 20,
                "unpacked": True, "units": sorted(self.units)[:1],
            }],
            "unused": {"layers": self.unused_layers, "size": self.unused_layers << 20},
        }  # fmt: skip

    async def prune_images(self) -> dict[str, Any]:
        self.calls.append(("prune_images", ""))
        removed, self.unused_layers = self.unused_layers, 0
        return {"removed": removed, "freed": removed << 20}

    async def create(
        self, name: str | None, unit: dict[str, Any], remove: bool, start: bool = True
    ) -> tuple[int, UnitStatus]:
        name = name or f"run-{len(self.units):08x}"
        if name in self.units:
            raise SupervisorError(f"a unit named {name} exists already")
        if "service" not in unit:
            raise InvalidUnit(["service: required section missing"])
        self.calls.append(("create", name))
        seq = self.event_seq
        self.units[name] = make_status(name, "stopped")
        if not start:
            return seq, self.units[name]
        return seq, self._set(name, "running", "started")

    async def delete(self, name: str) -> None:
        self.get_unit(name)
        self.calls.append(("delete", name))
        del self.units[name]

    def kill(self, name: str, signum: int) -> UnitStatus:
        unit = self.get_unit(name)
        if unit.state != "running":
            raise SupervisorError(f"{name} is not running")
        self.calls.append(("kill", f"{name} {signum}"))
        return unit

    def log_path(self, name: str) -> str:
        self.get_unit(name)
        return str(self.log_dir / f"{name}.log")

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


def many_units(count: int) -> list[UnitStatus]:
    """`count` units in a realistic mix of states, for benchmarks."""
    states = ("running",) * 7 + ("backoff", "failed", "stopped")
    return [
        dataclasses.replace(
            make_status(f"svc-{i:04d}", states[i % len(states)], pid=1000 + i),
            restarts=i % 5,
            last_exit="exit-code:1" if i % 10 == 7 else None,
            # As the engine says them: every running unit's uptime, a backoff's next start.
            uptime=3600.0 + i if states[i % len(states)] == "running" else None,
            next_start_in=4.5 if states[i % len(states)] == "backoff" else None,
        )
        for i in range(count)
    ]


class ServerThread:
    """The real API server on a temporary socket, its loop in a background thread, so tests and
    benchmarks can use blocking clients (http.client, curl, sandboxctl) against it."""

    def __init__(
        self,
        controller: FakeController,
        socket_path: Path,
        policy: auth.Policy | None = None,
        mode: int = 0o660,
        *,
        history: bool = False,
    ) -> None:
        self.controller, self.path = controller, socket_path
        self.policy = policy or auth.Policy(group_gid=None)
        self.mode = mode
        self.event_log = EventLog() if history else None  # as the daemon's: since, replay
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: Server | None = None

    def __enter__(self) -> ServerThread:
        self._thread.start()
        serving = serve_on(
            self.controller, self.path, self.policy, mode=self.mode, event_log=self.event_log
        )
        self._server = self.call(serving)
        return self

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def soon(self, fn: Callable[[], object]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self.call(self._server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
