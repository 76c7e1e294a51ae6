"""`GET /metrics`: Prometheus text built from the engine's unit snapshots at scrape time.

Unit metrics are not kept as live objects: a custom collector reads the units' detail views
(`Controller.list_units(detail=True)`) on each scrape, so a removed unit disappears and nothing
can drift from what `status` shows.
The daemon's own timings (reconcile, start and restart durations) are ordinary instruments the
engine feeds through `Metrics.observe_reconcile`, `Metrics.reconcile_timer()` and
`Metrics.observe_timing`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from supervisor.api.openapi import HEALTH_STATES, STATES
from supervisor.engine.model import Controller

RECONCILE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A start is a fork and an exec (tens of ms) up to a readiness wait (start_timeout: minutes);
# a restart adds the [restart] delay, which backs off to max_delay.
START_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
RESTART_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
PSI_RESOURCES = ("cpu", "memory", "io")
PSI_KINDS = ("some", "full")
PSI_WINDOWS = ("avg10", "avg60", "avg300")


def _number(usage: dict[str, Any], key: str) -> float | None:
    value = usage.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class UnitCollector(Collector):
    """Per-unit families from the controller's snapshot (usage keys as engine/status.py sets)."""

    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    def collect(self) -> Iterable[Metric]:
        state = GaugeMetricFamily(
            "sandboxd_unit_state", "1 for the state the unit is in", labels=["unit", "state"]
        )
        restarts = CounterMetricFamily(
            "sandboxd_unit_restarts", "restarts since the daemon started", labels=["unit"]
        )
        ooms = CounterMetricFamily("sandboxd_unit_oom_kills", "OOM kills", labels=["unit"])
        memory = GaugeMetricFamily(
            "sandboxd_unit_memory_bytes", "memory in use by the unit's cgroup", labels=["unit"]
        )
        cpu = CounterMetricFamily(
            "sandboxd_unit_cpu_seconds", "CPU time used by the unit's cgroup", labels=["unit"]
        )
        pids = GaugeMetricFamily(
            "sandboxd_unit_pids", "tasks in the unit's cgroup", labels=["unit"]
        )
        health = GaugeMetricFamily(
            "sandboxd_unit_health",
            "1 for the unit's health verdict (units with [health] only)",
            labels=["unit", "state"],
        )
        health_failures = GaugeMetricFamily(
            "sandboxd_unit_health_consecutive_failures",
            "failed probes in a row",
            labels=["unit"],
        )
        probes = CounterMetricFamily(
            "sandboxd_unit_health_probes", "health probes run", labels=["unit"]
        )
        unhealthy = CounterMetricFamily(
            "sandboxd_unit_unhealthy", "times the unit became unhealthy", labels=["unit"]
        )
        probe_seconds = GaugeMetricFamily(
            "sandboxd_unit_health_probe_duration_seconds",
            "how long the last health probe took",
            labels=["unit"],
        )
        dropped = CounterMetricFamily(
            "sandboxd_unit_output_dropped_bytes",
            "service output dropped because the log file took no more (a full disk)",
            labels=["unit"],
        )
        peak = GaugeMetricFamily(
            "sandboxd_unit_memory_peak_bytes",
            "the most memory the unit's cgroup has used (v2: since the cgroup was made; v1: "
            "max_usage_in_bytes)",
            labels=["unit"],
        )
        io_read = CounterMetricFamily(
            "sandboxd_unit_io_read_bytes", "bytes read from block devices", labels=["unit"]
        )
        io_write = CounterMetricFamily(
            "sandboxd_unit_io_write_bytes", "bytes written to block devices", labels=["unit"]
        )
        stalled = CounterMetricFamily(
            "sandboxd_unit_pressure_stalled_seconds",
            "time tasks of the unit were stalled on a resource (PSI total; some: at least one "
            "task, full: all non-idle tasks at once; cgroup v2 only)",
            labels=["unit", "resource", "kind"],
        )
        pressure = GaugeMetricFamily(
            "sandboxd_unit_pressure_ratio",
            "share of wall time stalled on a resource, averaged over the window (PSI avg10, "
            "avg60, avg300 as 0..1; cgroup v2 only)",
            labels=["unit", "resource", "kind", "window"],
        )
        up = GaugeMetricFamily("sandboxd_units", "units known to the daemon")
        units = self._controller.list_units(detail=True)
        up.add_metric([], len(units))
        for unit in units:
            for name in STATES:
                state.add_metric([unit.name, name], 1.0 if unit.state == name else 0.0)
            restarts.add_metric([unit.name], unit.restarts)
            ooms.add_metric([unit.name], unit.oom_kills)
            if unit.memory_bytes is not None:
                memory.add_metric([unit.name], unit.memory_bytes)
            if (usec := _number(unit.usage, "cpu_usage_usec")) is not None:
                cpu.add_metric([unit.name], usec / 1e6)
            if (count := _number(unit.usage, "pids")) is not None:
                pids.add_metric([unit.name], count)
            for family, key in (
                (peak, "memory_peak_bytes"),
                (io_read, "io_read_bytes"),
                (io_write, "io_write_bytes"),
            ):
                if (value := _number(unit.usage, key)) is not None:
                    family.add_metric([unit.name], value)
            _add_pressure(stalled, pressure, unit.name, unit.usage.get("pressure"))
            if unit.health is not None:
                for verdict in HEALTH_STATES:
                    health.add_metric([unit.name, verdict], 1.0 if unit.health == verdict else 0.0)
            for family, key in (
                (health_failures, "health_failures"),
                (probes, "health_probes"),
                (unhealthy, "health_unhealthy_total"),
                (probe_seconds, "health_last_duration"),
                (dropped, "output_dropped_bytes"),
            ):
                if (value := _number(unit.extra, key)) is not None:
                    family.add_metric([unit.name], value)
        yield from (up, state, restarts, ooms, memory, cpu, pids)
        yield from (health, health_failures, probes, unhealthy, probe_seconds, dropped)
        yield from (peak, io_read, io_write, stalled, pressure)


def _add_pressure(
    stalled: CounterMetricFamily, ratio: GaugeMetricFamily, unit: str, pressure: object
) -> None:
    """A unit's PSI, as status shows it: {resource: {kind: {avg10, ..., total}}}. Absent
    (cgroup v1, a kernel without PSI) adds no sample at all, never a zero."""
    if not isinstance(pressure, dict):
        return
    for resource in PSI_RESOURCES:
        lines = pressure.get(resource)
        if not isinstance(lines, dict):
            continue
        for kind in PSI_KINDS:
            line = lines.get(kind)
            if not isinstance(line, dict):
                continue
            if (total := _number(line, "total")) is not None:
                stalled.add_metric([unit, resource, kind], total / 1e6)
            for window in PSI_WINDOWS:
                if (avg := _number(line, window)) is not None:
                    ratio.add_metric([unit, resource, kind, window.removeprefix("avg") + "s"],
                                     avg / 100)  # fmt: skip


class Metrics:
    """The daemon's registry. Create it first, hand `observe_reconcile` to the engine, then
    `bind(controller)` (serve() does) so scrapes see the units."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.reconcile_seconds = Histogram(
            "sandboxd_reconcile_duration_seconds",
            "time one reconcile (startup or reload) took",
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.start_seconds = Histogram(
            "sandboxd_unit_start_duration_seconds",
            "time from a unit's launch to running (ready, for a unit that says so)",
            buckets=START_BUCKETS,
            registry=self.registry,
        )
        self.restart_seconds = Histogram(
            "sandboxd_unit_restart_duration_seconds",
            "time from the end of a run to running again, for restarts by [restart] (the "
            "delay included)",
            buckets=RESTART_BUCKETS,
            registry=self.registry,
        )
        self._bound: UnitCollector | None = None
        # Made at the first report of a daemon with [cluster]: without one there is no etcd to
        # be reachable or not, and no series says otherwise.
        self._cluster: tuple[Gauge, Counter] | None = None

    def observe_cluster(self, reachable: bool) -> None:
        """The fleet agent's reachability hook: at its first answer, and at every change."""
        if self._cluster is None:
            self._cluster = (
                Gauge("sandboxd_cluster_reachable", "1 while an etcd member answers, else 0",
                      registry=self.registry),
                Counter("sandboxd_cluster_unreachable", "episodes of etcd unreachable",
                        registry=self.registry),
            )  # fmt: skip
        gauge, episodes = self._cluster
        gauge.set(1 if reachable else 0)
        if not reachable:
            episodes.inc()

    def bind(self, controller: Controller) -> None:
        if self._bound is not None:
            self.registry.unregister(self._bound)
        self._bound = UnitCollector(controller)
        self.registry.register(self._bound)

    def observe_reconcile(self, seconds: float) -> None:
        self.reconcile_seconds.observe(seconds)

    def observe_timing(self, kind: str, seconds: float) -> None:
        """The engine's `timing_observers` hook: kind is "start" or "restart"."""
        histogram = self.start_seconds if kind == "start" else self.restart_seconds
        histogram.observe(seconds)

    @contextmanager
    def reconcile_timer(self) -> Iterator[None]:
        with self.reconcile_seconds.time():
            yield

    def render(self) -> bytes:
        return generate_latest(self.registry)


METRICS_KEY = web.AppKey("metrics", Metrics)


async def handle_metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})
