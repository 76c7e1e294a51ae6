"""`[oom] pressure_limit`: act on a run under sustained pressure, before the OOM killer does.

The kernel wakes us (a PSI trigger on the run's cgroup, `UnitCgroup.watch_pressure`); each
wake-up is confirmed by reading the average the limit names. From the first confirmed reading
the condition must hold for `pressure_duration` (the hysteresis): while it may, it is re-read
every RECHECK seconds, and only then, so a quiet unit costs no timer at all. A reading below
the limit disarms it. Once it has held for the whole duration the action is taken:

* `restart`, `stop`: the verdict (a StopReason, `memory-pressure` for a memory limit) for the
  runner, which ends the run with it as any daemon-initiated end (stop_signal, stop_timeout,
  SIGKILL); then `[restart]` decides (`restart`), or the unit stays `exited` (`stop`).
* `signal:NAME`: the signal goes to PID 1 and the run goes on; the condition must then hold
  for another whole duration before the next one.

The monitor lives as long as the runner; its trigger as long as one run (`begin`/`end`).
"""

from __future__ import annotations

import asyncio
import enum
import signal
from collections.abc import Callable

from supervisor.cgroups import Closeable, UnitCgroup
from supervisor.engine.states import StopReason
from supervisor.errors import CgroupError
from supervisor.unit.pressure import PressureLimit, action_signal
from supervisor.unit.schema import Oom

Clock = Callable[[], float]
Event = Callable[..., None]  # UnitRunner._event(name, level="info", **detail)
# The exit reason of a run ended for each resource's limit.
REASONS = {
    "memory": StopReason.MEMORY_PRESSURE,
    "cpu": StopReason.CPU_PRESSURE,
    "io": StopReason.IO_PRESSURE,
}
# How often a holding condition is read again: often enough to see it end within a couple of
# the kernel's 2 s averaging periods, rarely enough to cost nothing.
RECHECK = 1.0


class Change(enum.Enum):
    HIGH = "high"  # the condition began to hold
    LOW = "low"  # it stopped holding before the duration was up
    ACT = "act"  # it has held for the whole duration


class Hysteresis:
    """When a condition sampled at arbitrary times has held for `duration` (pure logic)."""

    # Slots: one per unit's PressureMonitor.
    __slots__ = ("duration", "since")

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.since: float | None = None  # when it began to hold (or the last action)

    @property
    def armed(self) -> bool:
        return self.since is not None

    def observe(self, holds: bool, now: float) -> Change | None:
        if not holds:
            if self.since is None:
                return None
            self.since = None
            return Change.LOW
        if self.since is None:
            self.since = now
            return Change.ACT if self.duration <= 0 else Change.HIGH
        if now - self.since >= self.duration:
            self.since = now  # a signal is sent again only after another whole duration
            return Change.ACT
        return None

    def remaining(self, now: float) -> float:
        return 0.0 if self.since is None else max(0.0, self.since + self.duration - now)

    def reset(self) -> None:
        self.since = None


class PressureMonitor:
    # Slots: every unit's runner holds one for its life, with its Hysteresis (issue 23).
    __slots__ = (
        "_cgroup",
        "_event",
        "_hold",
        "_on_verdict",
        "_oom",
        "_send",
        "_timer",
        "_trigger",
        "clock",
        "last_value",
        "loop",
        "signals",
        "unit",
        "verdict",
    )

    def __init__(
        self,
        unit: str,
        loop: asyncio.AbstractEventLoop,
        clock: Clock,
        on_verdict: Callable[[], None],
        event: Event,
    ) -> None:
        self.unit, self.loop, self.clock = unit, loop, clock
        self._on_verdict, self._event = on_verdict, event
        self.verdict: StopReason | None = None  # restart/stop: the run must end
        self.signals = 0  # signals sent for pressure since the daemon started
        self._oom: Oom | None = None
        self._cgroup: UnitCgroup | None = None
        self._send: Callable[[int], bool] | None = None
        self._trigger: Closeable | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._hold = Hysteresis(0.0)
        self.last_value: float | None = None

    @property
    def limit(self) -> PressureLimit | None:
        return None if self._oom is None else self._oom.pressure_limit

    def begin(self, oom: Oom, cgroup: UnitCgroup | None, send: Callable[[int], bool]) -> None:
        """A run is running (launched and ready, or re-adopted): watch it if the unit has a
        `pressure_limit`. `send` signals its PID 1."""
        self.end()
        limit = oom.pressure_limit
        if limit is None or cgroup is None:
            return
        self._oom, self._cgroup, self._send = oom, cgroup, send
        self._hold = Hysteresis(oom.pressure_duration)
        try:
            self._trigger = cgroup.watch_pressure(
                self.loop, limit.resource, limit.kind, limit.threshold, self._check
            )
        except CgroupError as exc:
            # The host checks refuse such a unit where the daemon loads it (a v1 host, no
            # PSI); this is what is left: a kernel that refuses the trigger itself.
            self._event("pressure_watch_failed", "error", limit=str(limit), error=str(exc))
            return
        # A run re-adopted (or one that is slow to become ready) may be under pressure already,
        # and the trigger wakes only on what comes after it.
        self.loop.call_soon(self._check)

    def end(self) -> None:
        """The run ends: drop its trigger and timer; the verdict was the run's."""
        if self._trigger is not None:
            self._trigger.close()
            self._trigger = None
        self._cancel_timer()
        self._hold.reset()
        self._oom = self._cgroup = self._send = None
        self.verdict = None

    def _check(self) -> None:
        oom, cgroup, limit = self._oom, self._cgroup, self.limit
        if oom is None or cgroup is None or limit is None or self.verdict is not None:
            return
        try:
            value = cgroup.pressure_average(limit.resource, limit.kind, limit.window)
        except CgroupError:
            value = None  # the cgroup is going: the run's end is on its way
        self.last_value = value
        now = self.clock()
        change = self._hold.observe(value is not None and value > limit.threshold, now)
        if change is Change.HIGH:
            self._event("pressure_high", "warning", limit=str(limit), value=value,
                        duration=oom.pressure_duration)  # fmt: skip
        elif change is Change.LOW:
            self._event("pressure_low", limit=str(limit), value=value)
        elif change is Change.ACT:
            self._act(oom, limit, value)
        self._cancel_timer()
        if self._hold.armed and self.verdict is None:
            delay = min(RECHECK, max(0.01, self._hold.remaining(now)))
            self._timer = self.loop.call_later(delay, self._check)

    def _act(self, oom: Oom, limit: PressureLimit, value: float | None) -> None:
        action = oom.pressure_action
        self._event("pressure_action", "warning", limit=str(limit), value=value, action=action,
                    duration=oom.pressure_duration)  # fmt: skip
        name = action_signal(action)
        if name is None:
            self.verdict = REASONS[limit.resource]
            self._on_verdict()
            return
        sent = self._send is not None and self._send(int(signal.Signals[name]))
        self.signals += 1
        self._event("pressure_signal", "warning", signal=name, sent=sent)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
