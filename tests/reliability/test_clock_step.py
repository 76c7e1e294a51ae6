"""A wall-clock step of an hour, forward and back, changes no deadline and no uptime.

Backoff delays, start timeouts, stop timeouts, watchdogs and health intervals are decided on the
monotonic clock, and a re-adopted run's age on the boot clock; only timestamps shown to users
(`started_at`, event times) are wall-clock. This test steps the machine's wall clock
(clock_settime(CLOCK_REALTIME)), which no namespace can confine, so it runs only where
SANDBOXD_MAY_STEP_CLOCK=1: the throwaway cgroup v2 VM of scripts/test-v2.sh, never a shared host.
Every figure is compared against this test's own monotonic readings taken around each status
request, so the checks hold however slowly the machine runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.daemon_kit import Daemon
from tests.support.requires import requires_root

pytestmark = [
    pytest.mark.root,
    pytest.mark.wall_clock,
    requires_root,
    pytest.mark.skipif(
        os.environ.get("SANDBOXD_MAY_STEP_CLOCK") != "1",
        reason="steps the wall clock: only in the throwaway VM (scripts/test-v2.sh sets "
        "SANDBOXD_MAY_STEP_CLOCK=1)",
    ),
]

STEADY = '[service]\nexec = ["/bin/sleep", "100000"]\nstop_timeout = "500ms"\n'
# Fails at once, then waits 5 minutes in backoff: far longer than the test.
CRASHY = (
    '[service]\nexec = ["/bin/sh", "-c", "exit 3"]\n[restart]\ndelay = "5m"\nmax_delay = "10m"\n'
)
# Never says READY=1: `starting` until start_timeout, an hour away from any step's reach.
SLOW = (
    '[service]\nexec = ["/bin/sleep", "100000"]\nready = "notify"\nstart_timeout = "50m"\n'
    'stop_timeout = "500ms"\n'
)


def step(seconds: float) -> None:
    time.clock_settime(time.CLOCK_REALTIME, time.clock_gettime(time.CLOCK_REALTIME) + seconds)


@pytest.fixture
def stepped() -> Iterator[Callable[[float], None]]:
    """`step(s)`; the clock is stepped back by the total at the end."""
    total = 0.0

    def do(seconds: float) -> None:
        nonlocal total
        step(seconds)
        total += seconds

    yield do
    step(-total)


def timed_status(daemon: Daemon) -> tuple[float, float, dict[str, dict[str, Any]]]:
    before = time.monotonic()
    units = daemon.status()
    return before, time.monotonic(), units


def test_a_wall_clock_step_moves_no_deadline(
    rdaemons: Callable[[], Daemon], stepped: Callable[[float], None]
) -> None:
    daemon = rdaemons()
    daemon.write_unit("steady", STEADY)
    daemon.write_unit("crashy", CRASHY)
    daemon.write_unit("slow", SLOW)
    daemon.start()
    daemon.wait_unit("steady", lambda u: u["state"] == "running", 90)
    daemon.wait_unit("crashy", lambda u: u["state"] == "backoff", 90)
    daemon.wait_unit("slow", lambda u: u["state"] == "starting" and u["pid"], 90)

    last = timed_status(daemon)
    for seconds in (3600.0, -7200.0):
        stepped(seconds)
        now = timed_status(daemon)
        # The daemon read its clock somewhere inside each request: this much time passed.
        least, most = now[0] - last[1] - 0.01, now[1] - last[0] + 0.01
        before, after = last[2], now[2]
        for name, unit in after.items():
            was = before[name]
            assert (unit["state"], unit["pid"], unit["restarts"]) == (
                was["state"], was["pid"], was["restarts"]), (seconds, name, unit)  # fmt: skip
        grew = after["steady"]["uptime"] - before["steady"]["uptime"]
        assert least <= grew <= most, (seconds, grew, least, most)
        waited = before["crashy"]["next_start_in"] - after["crashy"]["next_start_in"]
        assert least <= waited <= most, (seconds, waited, least, most)
        last = now

    # A daemon killed and started again, an hour behind the clock the runs were launched at:
    # the re-adopted run's age continues from the boot clock.
    daemon.wait_recorded()
    daemon.kill9()
    daemon.start()
    daemon.wait_unit("steady", lambda u: u["state"] == "running", 90)
    now = timed_status(daemon)
    steady = now[2]["steady"]
    assert steady["pid"] == last[2]["steady"]["pid"]
    grew = steady["uptime"] - last[2]["steady"]["uptime"]
    assert now[0] - last[1] - 0.05 <= grew <= now[1] - last[0] + 0.05, grew
