"""`sandboxctl logs` and the logs endpoint over a rotated log: `-n N` reaches into the rotated
files (`<unit>.log.1` ... `.N`), and `-f` loses nothing while the log rotates, even several
times between two polls of the follower."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.daemon_kit import Daemon, UnixHTTPConnection, wait_for
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root]

# 500 numbered lines (4.5 KiB), a few at a time, then quiet: 1 KiB files rotate 4 times.
BURST = """
[service]
exec = ["/bin/sh", "-c", '''
i=1
while [ $i -le 500 ]; do
    echo "line $i"
    i=$((i + 1))
    [ $((i % 10)) -eq 0 ] && sleep 0.02
done
exec sleep 1000''']
stop_timeout = "500ms"
"""
# ~2 KiB every 50 ms into 4 KiB files: a rotation every ~100 ms, two per poll of a follower.
STREAM = """
[service]
exec = ["/bin/sh", "-c", '''
pad=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
trap "exit 0" TERM
i=0
while :; do
    j=0
    while [ $j -lt 20 ]; do echo "n $i $pad"; i=$((i + 1)); j=$((j + 1)); done
    sleep 0.05 & wait $!
done''']
stop_timeout = "2s"
"""


def sandboxctl(d: Daemon, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SANDBOXD_SOCKET": str(d.socket)}
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli.main", *argv],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def api_logs(d: Daemon, query: str) -> str:
    conn = UnixHTTPConnection(d.socket)
    try:
        conn.request("GET", f"/v1/units/burst/logs?{query}")
        response = conn.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        conn.close()


def kept_history(log: Path) -> list[str]:
    """Every line the log files hold, oldest first (read whole: test-sized files only)."""
    rotated = sorted(log.parent.glob(f"{log.name}.*"), key=lambda p: -int(p.suffix[1:]))
    return b"".join(p.read_bytes() for p in [*rotated, log]).decode().splitlines(keepends=True)


def test_last_lines_come_from_the_rotated_files_too(daemon: Daemon) -> None:
    daemon.config.write_text('log_max_size = "1K"\nlog_keep = 3\n')
    daemon.write_unit("burst", BURST)
    daemon.start()
    daemon.wait_unit("burst", lambda u: u["state"] == "running")
    wait_for(lambda: sandboxctl(daemon, "logs", "burst", "-n", "1").stdout == "line 500\n", 30)
    log = daemon.logs / "burst.log"
    history = kept_history(log)
    assert (daemon.logs / "burst.log.3").exists(), "the test needs a full rotation history"
    current = len(log.read_text().splitlines())
    assert len(history) > 250
    for n in (1, current, current + 1, 250, len(history), len(history) + 50):
        out = sandboxctl(daemon, "logs", "burst", "-n", str(n))
        assert out.returncode == 0, out.stderr
        assert out.stdout == "".join(history[-n:]), n
        assert api_logs(daemon, f"n={n}") == "".join(history[-n:]), n
    everything = sandboxctl(daemon, "logs", "burst").stdout
    assert everything == "".join(history), "without -n: all the log files hold, oldest first"
    assert api_logs(daemon, "n=0") == ""
    assert daemon.stop() == 0


def test_follow_loses_nothing_while_the_log_rotates(daemon: Daemon) -> None:
    daemon.config.write_text('log_max_size = "4K"\nlog_keep = 50\n')
    daemon.write_unit("stream", STREAM)
    daemon.start()
    daemon.wait_unit("stream", lambda u: u["state"] == "running")
    log = daemon.logs / "stream.log"
    env = {**os.environ, "SANDBOXD_SOCKET": str(daemon.socket)}
    follow = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli.main", "logs", "stream", "-n", "5", "-f"],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    numbers: list[int] = []
    inodes: set[int] = set()
    try:
        assert follow.stdout is not None
        deadline = time.monotonic() + 60
        while len(numbers) < 1500:  # ~4 s of output, ~40 rotations
            line = follow.stdout.readline()
            assert line and time.monotonic() < deadline, (line, numbers[-3:])
            numbers.append(int(line.split()[1]))
            if len(numbers) % 100 == 0 and log.exists():  # it is created at the next write
                inodes.add(log.stat().st_ino)
    finally:
        follow.kill()  # the test started it
        follow.wait()
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "a gap or a repeat"
    assert len(inodes) > 5, "the log should have rotated while followed"
    assert daemon.stop() == 0
