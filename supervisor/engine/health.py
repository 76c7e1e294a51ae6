"""`[health]`: probes of a ready run, and the verdict that ends it.

One asyncio task per ready run (no thread): probe, wait `interval` (from the start of one probe
to the start of the next), probe again. A probe that takes longer than `timeout` is a failure
(probes.py, probe_exec.py: a hung exec probe is killed with its process tree).

* The first probe runs as soon as the run is ready, so `after` dependents do not wait a whole
  interval for a healthy unit.
* `health` is `starting` until the first success, `healthy` after any success, `unhealthy`
  after `retries` consecutive failures; then the task ends and the runner ends the run with
  the reason `unhealthy`, which restarts through `[restart]` like a crash.
* `start_period`: failures before the first success, within that long after the run became
  ready, do not count (they are still shown as the last output).

The monitor survives runs (its state shows in status until the next run starts, so an
`unhealthy` unit in backoff says why) but its probes never outlive one: `end()` cancels the task
and synchronously kills a probe still running, before the runner tears the run's cgroup down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from supervisor.cgroups import UnitCgroup
from supervisor.contract import HealthState
from supervisor.engine.ports import Prober
from supervisor.engine.probe_exec import ExecProbe
from supervisor.engine.probes import HttpProbe, Probe, ProbeResult, TcpProbe
from supervisor.engine.states import StopReason
from supervisor.log import get_logger
from supervisor.unit.schema import Health
from supervisor.unit.spec import UnitSpec

log = get_logger()
Clock = Callable[[], float]
Event = Callable[..., None]  # UnitRunner._event(name, level="info", **detail)


def make_probe(
    unit: str, health: Health, pid: int, cgroup: UnitCgroup | None, prober: Prober | None
) -> Probe:
    if health.tcp is not None:
        return TcpProbe(pid, health.tcp)
    if health.http is not None:
        return HttpProbe(pid, health.http)
    assert health.exec is not None
    return ExecProbe(unit, pid, health.exec, cgroup=cgroup, prober=prober)


class HealthMonitor:
    # Slots: every unit's runner holds one for its life, [health] or not (issue 23).
    __slots__ = (
        "_event",
        "_on_change",
        "_probe",
        "_prober",
        "_task",
        "clock",
        "failures",
        "last_duration",
        "last_ok",
        "last_output",
        "last_probe_at",
        "loop",
        "probes",
        "state",
        "unhealthy_total",
        "unit",
    )

    def __init__(
        self,
        unit: str,
        loop: asyncio.AbstractEventLoop,
        clock: Clock,
        on_change: Callable[[], None],
        event: Event,
        *,
        prober: Prober | None = None,
    ) -> None:
        self.unit, self.loop, self.clock, self._prober = unit, loop, clock, prober
        self._on_change, self._event = on_change, event
        self.state: HealthState | None = None
        self.failures = 0  # consecutive failures that counted
        self.last_output: str | None = None
        self.last_ok: bool | None = None
        self.last_probe_at: float | None = None  # monotonic
        self.last_duration: float | None = None
        self.probes = 0  # probe runs since the daemon started
        self.unhealthy_total = 0  # times this unit was found unhealthy
        self._task: asyncio.Task[None] | None = None
        self._probe: Probe | None = None

    @property
    def verdict(self) -> StopReason | None:
        """UNHEALTHY while the current run has been found unhealthy, else None."""
        unhealthy = self.state is HealthState.UNHEALTHY and self._probe is not None
        return StopReason.UNHEALTHY if unhealthy else None

    def begin(self, spec: UnitSpec, pid: int, cgroup: UnitCgroup | None) -> None:
        """The run became ready: probe it (if the unit has `[health]`)."""
        self.end()
        health = spec.unit.health
        if health is None:
            self.clear()
            return
        self.failures, self.last_output, self.last_ok = 0, None, None
        self._set(HealthState.STARTING)
        self._probe = make_probe(self.unit, health, pid, cgroup, self._prober)
        self._task = self.loop.create_task(self._loop(self._probe, health),
                                           name=f"health:{self.unit}")  # fmt: skip

    def end(self) -> None:
        """The run ends: stop probing, kill a probe in progress (synchronously)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._probe is not None:
            probe, self._probe = self._probe, None
            probe.close()

    def clear(self) -> None:
        """No run: nothing to report."""
        self.end()
        if self.state is not None:
            self.state = None
            self._on_change()

    async def _loop(self, probe: Probe, health: Health) -> None:
        began = self.clock()
        seen_ok = False
        while True:
            started = self.clock()
            try:
                result = await probe.run(health.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in a probe must not take the daemon down
                log.exception("health.probe_crashed", unit=self.unit)
                result = ProbeResult(False, f"probe error: {exc}")
            now = self.clock()
            self.probes += 1
            self.last_probe_at, self.last_duration = now, now - started
            self.last_output, self.last_ok = result.output, result.ok
            if result.ok:
                seen_ok = True
                self.failures = 0
                self._set(HealthState.HEALTHY)
            elif seen_ok or now - began >= health.start_period:
                self.failures += 1
                if self.failures >= health.retries:
                    self.unhealthy_total += 1
                    # The runner logs unit.unhealthy as it ends the run.
                    self._set(HealthState.UNHEALTHY)
                    return
            await asyncio.sleep(max(0.0, health.interval - (self.clock() - started)))

    def _set(self, state: HealthState) -> None:
        if state != self.state:
            before, self.state = self.state, state
            if before is not None or state is not HealthState.STARTING:
                self._event("health", health=state, output=self.last_output)
            self._on_change()

    def view(self) -> dict[str, object]:
        """Status keys beyond `health` (only for units with `[health]` and a verdict)."""
        if self.state is None:
            return {}
        return {
            "health_failures": self.failures,
            "health_output": self.last_output,
            "health_last_ok": self.last_ok,
            "health_last_duration": None
            if self.last_duration is None
            else round(self.last_duration, 4),
            "health_probes": self.probes,
            "health_unhealthy_total": self.unhealthy_total,
        }
