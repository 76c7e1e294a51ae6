"""When a run counts as ready, and whether it still proves it is alive: the service side of
sd_notify for one unit (the README's `ready`, `start_timeout`, `watchdog`).

The runner asks three questions and decides everything else itself:

* `ready`: has the current run finished starting? With `ready = "started"` at once; with
  `ready = "notify"` once READY=1 arrived from a process in the unit's cgroup (notify.py checks
  the sender).
* `overdue()`: a reason to end the run now, or None. `"start-timeout"` when a run is still not
  ready `start_timeout` after its launch (EXTEND_TIMEOUT_USEC= pushes that deadline out, to at
  least that long from when it arrived, as systemd does); `"watchdog"` when a ready run sent no
  WATCHDOG=1 for `watchdog` (WATCHDOG_USEC= changes that timeout, WATCHDOG=trigger asks for it
  at once).
* `next_deadline()`: when to look again without a message (the runner sleeps until then).

The endpoint (socket) lives as long as the runner and spans runs: a run is only allowed to
speak while it is the current one (`begin_run` .. `end_run`), so a datagram from a previous
run's last breath cannot make the next one ready. After a daemon restart the socket is bound
again at the same path, which the re-adopted sandbox still sees through its directory bind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from supervisor.cgroups import UnitCgroup, member_check
from supervisor.engine.notify import NotifyEndpoint, NotifyMessage
from supervisor.engine.ports import Bind
from supervisor.engine.states import StopReason
from supervisor.unit.spec import UnitSpec

Clock = Callable[[], float]
Event = Callable[..., None]  # UnitRunner._event(name, level="info", **detail)
STATUS_MAX = 256  # characters of STATUS= kept for status


def needs_endpoint(spec: UnitSpec | None) -> bool:
    service = spec.unit.service if spec else None
    return service is not None and (service.ready == "notify" or service.watchdog > 0)


class Readiness:
    # Slots: every unit's runner holds one for its life (issue 23).
    __slots__ = (
        "_cgroup",
        "_event",
        "_member",
        "_start_deadline",
        "_triggered",
        "_wake",
        "_watchdog",
        "_watchdog_deadline",
        "clock",
        "endpoint",
        "errno",
        "loop",
        "ready",
        "ready_pid",
        "reloading",
        "state_dir",
        "status_text",
        "stopping",
        "unit",
    )

    def __init__(  # noqa: PLR0917
        self,
        unit: str,
        state_dir: Path,
        loop: asyncio.AbstractEventLoop,
        clock: Clock,
        wake: Callable[[], None],
        event: Event,
    ) -> None:
        self.unit, self.state_dir, self.loop, self.clock = unit, state_dir, loop, clock
        self._wake, self._event = wake, event
        self.endpoint: NotifyEndpoint | None = None
        self._cgroup: UnitCgroup | None = None  # the current run's (None: nobody may speak)
        # Its membership check, made at the run's first message, not at its launch: making it
        # reads the daemon's mountinfo, which a restart would otherwise wait for before
        # `unit.started`, and most runs never send a message.
        self._member: Callable[[int], bool] | None = None
        self.ready = False
        self.ready_pid: int | None = None  # who sent READY=1 (the runner tells `ready`)
        self.status_text: str | None = None  # the last STATUS=
        self.stopping = False  # STOPPING=1 seen in this run
        self.reloading = False  # RELOADING=1 seen, and no READY=1 since
        self.errno: int | None = None
        self._start_deadline: float | None = None
        self._watchdog = 0.0
        self._watchdog_deadline: float | None = None
        self._triggered = False

    # -- endpoint ------------------------------------------------------------------------

    def configure(self, spec: UnitSpec | None) -> None:
        """Open the endpoint when the spec speaks sd_notify, close it when it no longer does."""
        if needs_endpoint(spec) and self.endpoint is None:
            self.endpoint = NotifyEndpoint.open(
                self.state_dir, self.unit, self.loop, self._on_message, self._accept
            )
        elif not needs_endpoint(spec) and self.endpoint is not None:
            self.close()

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None

    def launch_extras(self, spec: UnitSpec) -> tuple[dict[str, str], list[Bind]]:
        """Environment and bind mounts the launcher adds to a run of `spec`."""
        self.configure(spec)
        if self.endpoint is None:
            return {}, []
        return self.endpoint.service_env(spec.unit.service.watchdog), [self.endpoint.bind]

    def _accept(self, pid: int) -> bool:
        if self._cgroup is None:
            return False
        if self._member is None:
            try:
                self._member = member_check(self._cgroup)
            except OSError:
                return False  # the mounts cannot be read: the sender cannot be shown ours
        return self._member(pid)

    # -- runs ----------------------------------------------------------------------------

    def begin_run(
        self,
        spec: UnitSpec,
        cgroup: UnitCgroup | None,
        adopted: bool = False,
        starting_for: float | None = None,
    ) -> None:
        """A run was launched, or re-adopted after a daemon restart: ready by then, or, with
        `starting_for`, still starting (launched that many seconds ago: its `start_timeout`
        runs on from there, and its READY=1 may still come)."""
        service = spec.unit.service
        if adopted:
            try:
                self.configure(spec)
            except OSError as exc:
                self._event("notify_unavailable", "error", error=str(exc))
        self._cgroup, self._member = cgroup, None
        self.status_text, self.stopping, self.errno, self._triggered = None, False, None, False
        self.reloading, self.ready_pid = False, None
        self._watchdog, self._watchdog_deadline = service.watchdog, None
        self.ready = (adopted and starting_for is None) or service.ready == "started"
        started = self.clock() - (starting_for or 0.0)
        self._start_deadline = None if self.ready else started + service.start_timeout
        if self.ready:
            self._arm_watchdog()

    def end_run(self) -> None:
        self._cgroup = self._member = None
        self.ready = False
        self._start_deadline = self._watchdog_deadline = None

    def overdue(self) -> StopReason | None:
        now = self.clock()
        if not self.ready:
            if self._start_deadline is not None and now >= self._start_deadline:
                return StopReason.START_TIMEOUT
            return None
        if self._triggered or (
            self._watchdog_deadline is not None and now >= self._watchdog_deadline
        ):
            return StopReason.WATCHDOG
        return None

    def next_deadline(self) -> float | None:
        """Seconds until `overdue()` may change by itself (None: only a message changes it)."""
        deadline = self._watchdog_deadline if self.ready else self._start_deadline
        return None if deadline is None else max(0.0, deadline - self.clock())

    def _arm_watchdog(self) -> None:
        self._watchdog_deadline = self.clock() + self._watchdog if self._watchdog > 0 else None

    # -- messages ------------------------------------------------------------------------

    def _on_message(self, msg: NotifyMessage) -> None:
        if self._cgroup is None:
            return  # between runs: nobody may speak
        if msg.status is not None:
            self.status_text = msg.status[:STATUS_MAX]
        if msg.errno is not None:
            self.errno = msg.errno
        self._on_phase(msg)
        self._on_deadlines(msg)
        self._wake()

    def _on_phase(self, msg: NotifyMessage) -> None:
        """RELOADING=1 and STOPPING=1: what the service says it is doing (before READY=1 is
        applied, so that only a READY=1 of a ready run ends a reload)."""
        if msg.reloading and not self.reloading:
            self.reloading = True  # its own reload (Type=notify-reload): shown, not acted on
            self._event("notify_reloading", notify_pid=msg.pid)
        if msg.ready and self.reloading:
            self.reloading = False
            if self.ready:
                self._event("notify_reloaded", notify_pid=msg.pid, status_text=self.status_text)
        if msg.stopping and not self.stopping:
            self.stopping = True
            self._event("notify_stopping", notify_pid=msg.pid)

    def _on_deadlines(self, msg: NotifyMessage) -> None:
        """READY=1, EXTEND_TIMEOUT_USEC=, WATCHDOG*: the start and watchdog deadlines."""
        if msg.extend_timeout_usec is not None and not self.ready:
            extended = self.clock() + msg.extend_timeout_usec / 1e6
            if self._start_deadline is not None and extended > self._start_deadline:
                self._start_deadline = extended
                self._event("start_timeout_extended", by=msg.extend_timeout_usec / 1e6)
        if msg.watchdog_usec is not None:
            self._watchdog = msg.watchdog_usec / 1e6
            if self.ready:
                self._arm_watchdog()
        if msg.ready and not self.ready:
            # The `ready` event is the runner's, once the unit is running.
            self.ready, self.ready_pid = True, msg.pid
            self._arm_watchdog()
        elif msg.watchdog and self.ready:
            self._arm_watchdog()
        if msg.watchdog_trigger:
            self._triggered = True
            self._event("watchdog_trigger", "warning", notify_pid=msg.pid)

    def view(self) -> dict[str, object]:
        """For status: extra keys (only for units that speak sd_notify)."""
        if self.endpoint is None:
            return {}
        return {
            "notify_status": self.status_text,
            "notify_ready": self.ready,
            "notify_stopping": self.stopping,
            "notify_reloading": self.reloading,
            "notify_errno": self.errno,
            "notify_rejected": self.endpoint.rejected,
        }
