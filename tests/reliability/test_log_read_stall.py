"""A log disk whose *reads* stall: `GET /v1/units/{name}/logs` (what `sandboxctl logs` asks)
waits for the disk, and nothing else does.

The daemon reads log files on its log-reader threads (api/logreaders.py), never on its event
loop, so while a logs request hangs in a read, `status` answers at once and a killed service is
restarted; a client that gives up mid-stall costs the daemon nothing; once reads return, the
next request gets the whole log. The log dir is a real FUSE filesystem whose reads stall while
the test says so (tests/support/stallfs.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from supervisor.api.logreaders import LogReaders
from tests.support.kit import cgroup_version, uname, unit_text, wait_for
from tests.support.stallfs import fuse_missing, stalling_fs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
    pytest.mark.skipif(fuse_missing() is not None, reason=f"a stalling fs: {fuse_missing()}"),
]


def logs_client(daemon: Any, unit: str) -> subprocess.Popen[bytes]:
    """`sandboxctl logs UNIT` as a user runs it, in its own process (it will hang)."""
    argv = [sys.executable, "-m", "supervisor.cli.main", "logs", unit]
    env = {**os.environ, "SANDBOXD_SOCKET": str(daemon.socket)}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def blocked_threads(pid: int) -> int:
    """How many of the daemon's threads wait in the kernel (state D: the stalled reads; its
    loop and writer threads sleep in state S)."""
    count = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        count += state == "D"
    return count


def test_a_stalled_log_read_holds_only_that_request(rdaemons: Callable[[], Any]) -> None:
    daemon = rdaemons()
    with stalling_fs(daemon.logs) as fs:
        victim = uname(daemon, "victim")
        daemon.write_unit(victim, unit_text(
            ["/bin/sh", "-c", "echo up; exec /bin/sleep 100000"], daemon, victim,
            restart={"policy": "always", "delay": "100ms"},
        ))  # fmt: skip
        daemon.start()
        first = daemon.wait_unit(victim, lambda u: u["state"] == "running", 60)
        wait_for(lambda: "up\n" in daemon.output(victim), 60)

        fs.stall_reads()
        # More logs requests than reader threads: the extra ones wait in the queue.
        clients = [logs_client(daemon, victim) for _ in range(6)]
        try:
            # Every reader thread is in a stalled read (the other requests wait their turn).
            wait_for(lambda: blocked_threads(daemon.proc.pid) == LogReaders().workers, 60)
            assert all(c.poll() is None for c in clients), [c.poll() for c in clients]
            began = time.monotonic()
            daemon.status()
            assert time.monotonic() - began < 5.0  # at once, not after the stall
            os.kill(first["pid"], signal.SIGKILL)
            again = daemon.wait_unit(
                victim, lambda u: u["state"] == "running" and u["pid"] != first["pid"], 60
            )
            assert again["last_exit"] == "signal:SIGKILL", again
            # A client that gives up mid-stall: the daemon closes its side later, quietly.
            clients[0].kill()
            clients[0].wait(30)
            assert all(c.poll() is None for c in clients[1:])
        finally:
            fs.resume()
        for client in clients[1:]:
            out, _ = client.communicate(timeout=60)
            assert client.returncode == 0 and b"up\n" in out, out
        # The threads are free again: a new request is answered whole.
        fresh = logs_client(daemon, victim)
        out, _ = fresh.communicate(timeout=60)
        assert fresh.returncode == 0 and out.count(b"up\n") == 2, out
        assert "Traceback" not in daemon.stderr_path().read_text()
        assert daemon.stop() == 0
