"""`[oom] pressure_limit` on real kernels (issue 26).

In the cgroup v2 VM: a service that grows its memory slowly past `memory_high` (no swap, a
`memory_max` far above) stalls on reclaim, its memory pressure rises, and the daemon restarts it
with the exit reason `memory-pressure` (or signals it) before the OOM killer ever acts. On the
v1 host: a unit with a pressure limit is refused with the reason. On any kernel with PSI: a
trigger wakes the loop through the epoll set (cgroups/pressure_trigger.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from supervisor.cgroups.pressure_trigger import PressureTrigger, trigger_line
from tests.support.requires import requires_cgroup_v1, requires_cgroup_v2, requires_root
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from daemon_kit import Daemon

# Grows by 1 MiB every 20 ms, touching every page. Past memory_high, reclaim cannot free its
# anonymous memory (no swap), so the kernel throttles each allocation by a delay that grows with
# the square of the overage (mem_cgroup_handle_over_high): with a small memory_high the task
# soon stalls on memory most of the time, and its memory.some pressure rises. It says `usr1` on
# SIGUSR1, and exits on SIGINT (a Python PID 1 has no SIGTERM handler).
GROWER = r"""
import signal, sys, time
signal.signal(signal.SIGUSR1, lambda *_: print("usr1", flush=True))
print("growing", flush=True)
blocks = []
while True:
    blocks.append(b"x" * (1 << 20))
    time.sleep(0.02)
"""


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """Read the daemon's modules once before the first daemon: in the TCG VM, a cold share
    made the first fork server miss its 10 s Hello (`fork server: no Hello within 10.0s`)."""
    subprocess.run(
        [sys.executable, "-c", "import supervisor.daemon, supervisor.sandbox.server.serverloop"],
        check=False, capture_output=True, timeout=300,
    )  # fmt: skip


# For the signal: a shell as PID 1 that says `usr1` on SIGUSR1 while the grower, its child,
# thrashes. The grower itself cannot be relied on to answer: under this much pressure even its
# interpreter's own code pages are reclaimed and read back, and it hardly runs at all.
SIGNALLED = [
    "/bin/sh", "-c",
    'trap "echo usr1" USR1; trap "exit 0" INT TERM; /usr/bin/python3 -c "$1" & '
    'while kill -0 $! 2>/dev/null; do wait $!; done',
    "sh", GROWER,
]  # fmt: skip


def _unit(action: str, duration: str, argv: list[str] | None = None) -> str:
    argv = argv or ["/usr/bin/python3", "-c", GROWER]
    return f"""
[service]
exec = {json.dumps(argv)}
stop_signal = "SIGINT"
stop_timeout = "5s"

[resources]
memory_high = "8M"
memory_max = "512M"
swap_max = "0"

[restart]
delay = "1s"

[oom]
pressure_limit = "memory.some.avg10 > 10"
pressure_duration = "{duration}"
pressure_action = "{action}"
"""


def _diagnosis(d: Daemon, name: str) -> str:
    """What a timeout shows: the pressure the unit is under and what the daemon did."""
    events = [e for e in d.events() if str(e.get("event", "")).startswith(("unit.", "daemon."))]
    usage = d.unit(name).get("usage", {})
    return f"usage {usage}; output {d.output(name)!r}; events {events[-30:]}"


def _no_oom_kill(d: Daemon, name: str) -> None:
    assert not d.events("unit.oom_kill"), d.events("unit.oom_kill")
    reasons = [e.get("reason") for e in d.events("unit.exited") if e.get("unit") == name]
    assert "oom-killed" not in reasons, reasons


@pytest.mark.cgroup_v2
@requires_cgroup_v2
@requires_root
def test_a_thrashing_service_is_restarted_before_the_oom_killer(daemon: Daemon) -> None:
    daemon.write_unit("grower", _unit("restart", "2s"))
    daemon.start()
    # Generous: the VM is emulated, and avg10 takes a few of the kernel's 2 s periods to rise.
    wait_for(
        lambda: (u := daemon.status()["grower"])["restarts"] >= 1 and u["state"] == "running",
        300,
        lambda: _diagnosis(daemon, "grower"),
    )
    unit = daemon.unit("grower")
    assert unit["last_exit"] == "memory-pressure"
    assert unit["oom_kills"] == 0
    assert daemon.events("unit.pressure_high") and daemon.events("unit.pressure_action")
    ended = [e for e in daemon.events("unit.exited") if e.get("unit") == "grower"]
    assert ended and ended[0]["reason"] == "memory-pressure"
    _no_oom_kill(daemon, "grower")


@pytest.mark.cgroup_v2
@requires_cgroup_v2
@requires_root
def test_a_pressure_signal_reaches_pid1_and_the_run_goes_on(daemon: Daemon) -> None:
    daemon.write_unit("grower", _unit("signal:SIGUSR1", "1s", SIGNALLED))
    daemon.start()
    wait_for(lambda: "usr1" in daemon.output("grower"), 300, lambda: _diagnosis(daemon, "grower"))
    unit = daemon.unit("grower")
    assert unit["state"] == "running" and unit["restarts"] == 0 and unit["last_exit"] is None
    sent = daemon.events("unit.pressure_signal")
    assert sent and sent[0]["signal"] == "SIGUSR1" and sent[0]["sent"] is True
    _no_oom_kill(daemon, "grower")


@pytest.mark.cgroup_v1
@requires_cgroup_v1
@requires_root
def test_cgroup_v1_refuses_a_pressure_limit_with_the_reason(daemon: Daemon) -> None:
    daemon.write_unit("grower", _unit("restart", "2s"))
    daemon.write_unit("plain", '[service]\nexec = ["/bin/sleep", "1000"]\n')
    daemon.start()
    daemon.wait_unit("plain", lambda u: u["state"] == "running", timeout=60)
    detail = daemon.unit("grower")
    assert detail["state"] == "invalid" and detail["pid"] is None
    [error] = detail["invalid"]
    assert "oom.pressure_limit: needs cgroup v2 pressure (PSI) files" in error
    argv = [sys.executable, "-m", "supervisor.cli.main", "validate", str(daemon.units)]
    validate = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert validate.returncode == 1, validate
    assert "oom.pressure_limit: needs cgroup v2 pressure (PSI) files" in validate.stderr


@pytest.mark.skipif(not os.path.exists("/proc/pressure/cpu"), reason="needs a kernel with PSI")
def test_a_psi_trigger_wakes_the_loop() -> None:
    """The system-wide cpu.pressure takes the same triggers as a cgroup's: three busy
    processes on at most a few CPUs make tasks wait for a CPU, which wakes the trigger."""
    woken = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        trigger = PressureTrigger(loop, "/proc/pressure/cpu", trigger_line("some", 0.0),
                                  woken.set)  # fmt: skip
        busy = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range((os.cpu_count() or 1) + 2)
        ]
        try:
            await asyncio.wait_for(woken.wait(), 120)
        finally:
            trigger.close()
            for proc in busy:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

    asyncio.run(main())
    assert woken.is_set()
