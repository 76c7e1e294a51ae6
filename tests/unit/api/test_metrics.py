from __future__ import annotations

from collections.abc import Iterable

from api_helpers import call
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from supervisor.api.metrics import RECONCILE_BUCKETS, Metrics
from supervisor.api.promexport import histogram
from supervisor.api.testing import FakeController, ServerThread, make_status


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_unit_metrics_follow_the_controller() -> None:
    controller = FakeController([make_status("web", restarts=2, oom_kills=1), make_status("db")])
    metrics = Metrics()
    metrics.bind(controller)
    got = samples(metrics.render().decode())
    assert got[("sandboxd_unit_state", (("state", "running"), ("unit", "web")))] == 1
    assert got[("sandboxd_unit_state", (("state", "failed"), ("unit", "web")))] == 0
    assert got[("sandboxd_unit_restarts_total", (("unit", "web"),))] == 2
    assert got[("sandboxd_unit_oom_kills_total", (("unit", "web"),))] == 1
    assert got[("sandboxd_unit_memory_bytes", (("unit", "web"),))] == 12 << 20
    assert got[("sandboxd_unit_cpu_seconds_total", (("unit", "web"),))] == 1.5
    assert got[("sandboxd_unit_pids", (("unit", "web"),))] == 3
    assert got[("sandboxd_units", ())] == 2
    del controller.units["db"]
    got = samples(metrics.render().decode())
    assert ("sandboxd_unit_pids", (("unit", "db"),)) not in got


def test_health_metrics_only_for_units_with_health() -> None:
    extra = {
        "health_failures": 2,
        "health_probes": 40,
        "health_unhealthy_total": 1,
        "health_last_duration": 0.25,
    }
    controller = FakeController([make_status("web", health="unhealthy", extra=extra)])
    controller.units["db"] = make_status("db")
    metrics = Metrics()
    metrics.bind(controller)
    got = samples(metrics.render().decode())
    assert got[("sandboxd_unit_health", (("state", "unhealthy"), ("unit", "web")))] == 1
    assert got[("sandboxd_unit_health", (("state", "healthy"), ("unit", "web")))] == 0
    assert got[("sandboxd_unit_health_consecutive_failures", (("unit", "web"),))] == 2
    assert got[("sandboxd_unit_health_probes_total", (("unit", "web"),))] == 40
    assert got[("sandboxd_unit_unhealthy_total", (("unit", "web"),))] == 1
    assert got[("sandboxd_unit_health_probe_duration_seconds", (("unit", "web"),))] == 0.25
    assert not [key for key in got if key[0].startswith("sandboxd_unit_health") and
                ("unit", "db") in key[1]]  # fmt: skip


def test_reconcile_hook() -> None:
    metrics = Metrics()
    metrics.observe_reconcile(0.02)
    with metrics.reconcile_timer():
        pass
    got = samples(metrics.render().decode())
    assert got[("sandboxd_reconcile_duration_seconds_count", ())] == 2
    assert got[("sandboxd_reconcile_duration_seconds_bucket", (("le", "0.05"),))] == 2


def test_cluster_reachability_only_with_a_cluster() -> None:
    metrics = Metrics()
    assert b"sandboxd_cluster" not in metrics.render()  # no [cluster]: no series at all
    for reachable in (True, False, True, False):
        metrics.observe_cluster(reachable)
    got = samples(metrics.render().decode())
    assert got[("sandboxd_cluster_reachable", ())] == 0
    assert got[("sandboxd_cluster_unreachable_total", ())] == 2


def test_metrics_endpoint(server: ServerThread) -> None:
    status, headers, raw = call(server.path, "GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert ("sandboxd_unit_state", (("state", "backoff"), ("unit", "db"))) in samples(raw.decode())


PSI = {
    "some": {"avg10": 12.5, "avg60": 3.0, "avg300": 0.5, "total": 2_500_000},
    "full": {"avg10": 4.0, "avg60": 1.0, "avg300": 0.0, "total": 1_000_000},
}


def test_io_peak_and_pressure_per_unit() -> None:
    usage = {
        "memory_bytes": 1, "memory_peak_bytes": 8 << 20, "io_read_bytes": 4096,
        "io_write_bytes": 512, "pressure": {"memory": PSI, "cpu": {"some": PSI["some"]}},
    }  # fmt: skip
    controller = FakeController([make_status("web", usage=usage), make_status("v1")])
    metrics = Metrics()
    metrics.bind(controller)
    got = samples(metrics.render().decode())
    web = ("unit", "web")
    assert got[("sandboxd_unit_memory_peak_bytes", (web,))] == 8 << 20
    assert got[("sandboxd_unit_io_read_bytes_total", (web,))] == 4096
    assert got[("sandboxd_unit_io_write_bytes_total", (web,))] == 512
    stalled = "sandboxd_unit_pressure_stalled_seconds_total"
    assert got[(stalled, (("kind", "full"), ("resource", "memory"), web))] == 1.0
    assert got[(stalled, (("kind", "some"), ("resource", "cpu"), web))] == 2.5
    ratio = "sandboxd_unit_pressure_ratio"
    assert got[(ratio, (("kind", "some"), ("resource", "memory"), web, ("window", "10s")))] == 0.125
    assert got[(ratio, (("kind", "full"), ("resource", "memory"), web, ("window", "60s")))] == 0.01
    # No PSI (cgroup v1): no sample at all, never a zero that would look measured.
    assert not [k for k in got if "pressure" in k[0] and ("unit", "v1") in k[1]]
    assert not [k for k in got if "pressure" in k[0] and ("resource", "io") in k[1]]


def test_start_and_restart_histograms() -> None:
    metrics = Metrics()
    metrics.observe_timing("start", 0.03)
    metrics.observe_timing("start", 7.0)
    metrics.observe_timing("restart", 1.2)
    got = samples(metrics.render().decode())
    assert got[("sandboxd_unit_start_duration_seconds_count", ())] == 2
    assert got[("sandboxd_unit_start_duration_seconds_bucket", (("le", "0.05"),))] == 1
    assert got[("sandboxd_unit_restart_duration_seconds_count", ())] == 1
    assert got[("sandboxd_unit_restart_duration_seconds_bucket", (("le", "2.5"),))] == 1


def test_timings_render_as_prometheus_clients_own_histogram() -> None:
    """The daemon records its timings without prometheus_client (api/metrics.py) and renders
    them as its Histogram would: the same samples for the same observations (bounds met
    exactly, beyond the last bucket, zero), only the creation times differ."""
    seen = (0.0, 0.001, 0.0011, 0.3, 7.0, 30.0, 31.0, 1e9)
    ours = Metrics()
    theirs = CollectorRegistry()
    reference = Histogram("sandboxd_reconcile_duration_seconds",
                          "time one reconcile (startup or reload) took",
                          buckets=RECONCILE_BUCKETS, registry=theirs)  # fmt: skip
    for seconds in seen:
        ours.observe_reconcile(seconds)
        reference.observe(seconds)

    def without_created(text: str) -> list[str]:
        return [line for line in text.splitlines() if "_created" not in line]

    mine = CollectorRegistry()
    mine.register(_Fixed(histogram(ours.reconcile_seconds)))
    assert without_created(generate_latest(mine).decode()) == without_created(
        generate_latest(theirs).decode()
    )


class _Fixed(Collector):
    """A collector of one family made beforehand."""

    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> Iterable[Metric]:
        return [self.family]
