"""The Prometheus text of `GET /metrics`, made with prometheus_client at the first scrape.

Imported by api/metrics.py when a scrape first asks (issue 23, the daemon's fixed memory):
prometheus_client and what it imports (http.server, socketserver, wsgiref, ...) were ~1 MB of
every daemon's heap, also of daemons nothing scrapes. The daemon's timings are recorded
meanwhile without it (metrics.Timings) and turned into families here, sample for sample as
prometheus_client's own Histogram, Gauge and Counter would show them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from supervisor.api.openapi import HEALTH_STATES, STATES
from supervisor.engine.model import Controller

if TYPE_CHECKING:
    from supervisor.api.metrics import Metrics, Timings

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


def histogram(timings: Timings) -> Metric:
    """`timings` as prometheus_client's Histogram shows itself: cumulative buckets (`le`
    spelled as Go would), count, sum, and when it was made."""
    family = Metric(timings.name, timings.doc, "histogram")
    total = 0.0
    for bound, count in zip(timings.bounds, timings.counts, strict=True):
        total += count
        le = floatToGoString(bound)  # type: ignore[no-untyped-call]  # the library's own spelling
        family.add_sample(timings.name + "_bucket", {"le": le}, total)
    family.add_sample(timings.name + "_count", {}, total)
    family.add_sample(timings.name + "_sum", {}, timings.sum)
    family.add_sample(timings.name + "_created", {}, timings.created)
    return family


class DaemonCollector(Collector):
    """The daemon's own series: its timings, and with a [cluster] its reachability."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        for timings in self._metrics.timings():
            yield histogram(timings)
        cluster = self._metrics.cluster
        if cluster is not None:
            yield GaugeMetricFamily("sandboxd_cluster_reachable",
                                    "1 while an etcd member answers, else 0",
                                    value=1 if cluster.reachable else 0)  # fmt: skip
            yield CounterMetricFamily("sandboxd_cluster_unreachable",
                                      "episodes of etcd unreachable", value=cluster.episodes,
                                      created=cluster.created)  # fmt: skip


def registry(metrics: Metrics, controller: Controller | None) -> CollectorRegistry:
    """A registry of the daemon's series and, once bound, the units'."""
    made = CollectorRegistry(auto_describe=True)
    made.register(DaemonCollector(metrics))
    if controller is not None:
        made.register(UnitCollector(controller))
    return made


def render(made: CollectorRegistry) -> bytes:
    return bytes(generate_latest(made))
