"""A stalled log disk (issue 29): writes to the log dir hang for 10 s, and supervision goes on.

The log dir is a real FUSE filesystem whose writes stall while the test says so
(tests/support/stallfs.py). During the stall, `status` answers at once, a service killed with
SIGKILL is seen and restarted, a service writing 8 MiB (8x its pipe) is not blocked and its exit
is recorded, the daemon's memory does not grow with the output it cannot write, and what it
dropped is counted and said in the log once writes return.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from supervisor.engine.output import STALL_AFTER, STALLED
from tests.support.kit import cgroup_version, rss_kib, uname, unit_text, wait_for
from tests.support.stallfs import fuse_missing, stalling_fs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
    pytest.mark.skipif(fuse_missing() is not None, reason=f"a stalling fs: {fuse_missing()}"),
]

STALL_SECONDS = 10.0
FLOOD_BYTES = 8 << 20


def status_latency(daemon: Any) -> float:
    began = time.monotonic()
    daemon.status()
    return time.monotonic() - began


def test_a_stalled_log_disk_never_freezes_supervision(rdaemons: Callable[[], Any]) -> None:
    daemon = rdaemons()
    with stalling_fs(daemon.logs) as fs:
        victim, flood = uname(daemon, "victim"), uname(daemon, "flood")
        daemon.write_unit(victim, unit_text(
            ["/bin/sh", "-c", "echo up; exec /bin/sleep 100000"], daemon, victim,
            restart={"policy": "always", "delay": "100ms"},
        ))  # fmt: skip
        daemon.start()
        first = daemon.wait_unit(victim, lambda u: u["state"] == "running", 60)
        wait_for(lambda: "up\n" in daemon.output(victim), 60)
        rss_before = rss_kib(daemon.proc.pid)

        fs.stall()
        stalled_at = time.monotonic()
        # A unit that floods its output: it must run to its end during the stall.
        daemon.write_unit(flood, unit_text(
            ["/bin/sh", "-c", f"head -c {FLOOD_BYTES} /dev/zero; echo flood done"],
            daemon, flood, restart={"policy": "no"},
        ))  # fmt: skip
        assert daemon.request("POST", "/v1/reload")[0] == 200
        done = daemon.wait_unit(flood, lambda u: u["state"] in ("exited", "failed"), 60)
        assert done["last_exit"] == "exit-code:0", done  # not blocked on a full pipe
        stalled = [e for e in daemon.events("unit.output_dropping") if e.get("unit") == flood]
        assert len(stalled) == 1 and stalled[0]["error"] == STALLED, stalled

        # An exit during the stall is seen and the unit restarted (the victim's "up" from the
        # restart is a write into the stalled disk too).
        killed_at = time.monotonic()
        os.kill(first["pid"], signal.SIGKILL)
        again = daemon.wait_unit(
            victim, lambda u: u["state"] == "running" and u["pid"] != first["pid"], 60
        )
        restart_seconds = time.monotonic() - killed_at
        assert again["last_exit"] == "signal:SIGKILL", again
        assert restart_seconds < 5, restart_seconds

        # `status` keeps answering at once for the rest of the stall.
        latencies = [status_latency(daemon)]
        while time.monotonic() - stalled_at < STALL_SECONDS:
            latencies.append(status_latency(daemon))
        assert max(latencies) < 1.0, sorted(latencies)[-5:]
        # Bounded memory: 8 MiB of output the disk did not take is not held by the daemon.
        assert rss_kib(daemon.proc.pid) < rss_before + 16 * 1024

        # The restarted victim's "up" waits behind the stalled write too, and is dropped once
        # it has waited STALL_AFTER: the stall lasts until then, however slow the machine.
        def victim_dropping() -> bool:
            return any(e.get("unit") == victim for e in daemon.events("unit.output_dropping"))

        wait_for(victim_dropping, 60)
        fs.resume()
        # What was dropped is counted, and said in each log where the gap is, at once (the
        # victim writes nothing more).
        dropped = daemon.unit(flood)["output_dropped_bytes"]
        assert 0 < dropped <= FLOOD_BYTES, dropped
        line = f"bytes of output dropped: {STALLED}]\n"
        for name in (victim, flood):
            wait_for(lambda name=name: line in daemon.output(name), 60,
                     lambda name=name: repr(daemon.output(name)[-300:]))  # fmt: skip
        assert "Traceback" not in daemon.stderr_path().read_text()
        assert STALL_AFTER < STALL_SECONDS
        assert daemon.stop() == 0
