"""`GET /metrics`: Prometheus text built from the engine's unit snapshots at scrape time.

Unit metrics are not kept as live objects: a custom collector reads the units' detail views
(`Controller.list_units(detail=True)`) on each scrape, so a removed unit disappears and nothing
can drift from what `status` shows.
The daemon's own timings (reconcile, start and restart durations) are histograms the engine
feeds through `Metrics.observe_reconcile`, `Metrics.reconcile_timer()` and
`Metrics.observe_timing`. They are recorded here without prometheus_client (`Timings`), which
api/promexport.py imports at the first scrape: ~1 MB of the daemon's heap that a daemon
nothing scrapes never holds (issue 23).
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from aiohttp import web

from supervisor.engine.model import Controller

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

RECONCILE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A start is a fork and an exec (tens of ms) up to a readiness wait (start_timeout: minutes);
# a restart adds the [restart] delay, which backs off to max_delay.
START_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
RESTART_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# The Prometheus content type of the text format 0.0.4 (prometheus_client's
# CONTENT_TYPE_PLAIN_0_0_4), spelled here so a scrape's answer needs nothing imported for it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Timings:
    """One histogram's counts, as prometheus_client's Histogram keeps them: an observation
    goes to the first bucket whose upper bound is at or above it (the last is +Inf)."""

    __slots__ = ("bounds", "counts", "created", "doc", "name", "sum")

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]) -> None:
        self.name, self.doc = name, doc
        self.bounds = (*buckets, math.inf)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds


class Cluster:
    """The fleet agent's reachability: the gauge's value and the counter of episodes."""

    __slots__ = ("created", "episodes", "reachable")

    def __init__(self) -> None:
        self.reachable, self.episodes, self.created = False, 0, time.time()


class Metrics:
    """The daemon's series. Create it first, hand `observe_reconcile` to the engine, then
    `bind(controller)` (serve() does) so scrapes see the units."""

    def __init__(self) -> None:
        self.reconcile_seconds = Timings(
            "sandboxd_reconcile_duration_seconds",
            "time one reconcile (startup or reload) took",
            RECONCILE_BUCKETS,
        )
        self.start_seconds = Timings(
            "sandboxd_unit_start_duration_seconds",
            "time from a unit's launch to running (ready, for a unit that says so)",
            START_BUCKETS,
        )
        self.restart_seconds = Timings(
            "sandboxd_unit_restart_duration_seconds",
            "time from the end of a run to running again, for restarts by [restart] (the "
            "delay included)",
            RESTART_BUCKETS,
        )
        self._controller: Controller | None = None
        self._registry: CollectorRegistry | None = None
        # Made at the first report of a daemon with [cluster]: without one there is no etcd to
        # be reachable or not, and no series says otherwise.
        self.cluster: Cluster | None = None

    def timings(self) -> tuple[Timings, ...]:
        return (self.reconcile_seconds, self.start_seconds, self.restart_seconds)

    def observe_cluster(self, reachable: bool) -> None:
        """The fleet agent's reachability hook: at its first answer, and at every change."""
        if self.cluster is None:
            self.cluster = Cluster()
        self.cluster.reachable = reachable
        if not reachable:
            self.cluster.episodes += 1

    def bind(self, controller: Controller) -> None:
        self._controller = controller
        self._registry = None  # made again, with this controller's units, at the next scrape

    @property
    def registry(self) -> CollectorRegistry:
        """The prometheus_client registry of these series, made (and prometheus_client
        imported) at its first use."""
        if self._registry is None:
            from supervisor.api import promexport  # noqa: PLC0415  (at the first scrape: module doc)

            self._registry = promexport.registry(self, self._controller)
        return self._registry

    def observe_reconcile(self, seconds: float) -> None:
        self.reconcile_seconds.observe(seconds)

    def observe_timing(self, kind: str, seconds: float) -> None:
        """The engine's `timing_observers` hook: kind is "start" or "restart"."""
        histogram = self.start_seconds if kind == "start" else self.restart_seconds
        histogram.observe(seconds)

    @contextmanager
    def reconcile_timer(self) -> Iterator[None]:
        # As prometheus_client's Histogram.time(): perf_counter, never below zero.
        start = time.perf_counter()
        try:
            yield
        finally:
            self.reconcile_seconds.observe(max(time.perf_counter() - start, 0.0))

    def render(self) -> bytes:
        from supervisor.api import promexport  # noqa: PLC0415  (at the first scrape: module doc)

        return promexport.render(self.registry)


METRICS_KEY = web.AppKey("metrics", Metrics)


async def handle_metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
