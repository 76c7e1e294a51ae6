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

# Grows by 1 MiB every 20 ms, touching every page; far past memory_high the kernel makes each
# allocation wait for reclaim that cannot succeed (no swap), so the task stalls on memory
# nearly all the time: memory.some and memory.full pressure near 100%. It says `usr1` on
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


def _unit(action: str, duration: str) -> str:
    return f"""
[service]
exec = ["/usr/bin/python3", "-c", {json.dumps(GROWER)}]
stop_signal = "SIGINT"
stop_timeout = "5s"

[resources]
memory_high = "24M"
memory_max = "512M"
swap_max = "0"

[restart]
delay = "1s"

[oom]
pressure_limit = "memory.some.avg10 > 10"
pressure_duration = "{duration}"
pressure_action = "{action}"
"""


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
    unit = daemon.wait_unit(
        "grower", lambda u: u["restarts"] >= 1 and u["state"] == "running", timeout=300
    )
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
    daemon.write_unit("grower", _unit("signal:SIGUSR1", "1s"))
    daemon.start()
    wait_for(lambda: "usr1" in daemon.output("grower"), 300, lambda: daemon.output("grower"))
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
