"""`sandboxctl top` and PSI in status against a real daemon: --once, --json, a pipe, and the
interactive keys on a pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.support.requires import cgroup_version, requires_root
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from daemon_kit import Daemon

pytestmark = [pytest.mark.root, requires_root]

BUSY = """
[service]
exec = ["/bin/sh", "-c", "while :; do :; done"]
stop_timeout = "500ms"
[resources]
memory_max = "64M"
"""
IDLE = """
[service]
exec = ["/bin/sleep", "1000"]
stop_timeout = "500ms"
"""


def _env(d: Daemon) -> dict[str, str]:
    env = {**os.environ, "SANDBOXD_SOCKET": str(d.socket)}
    env.pop("TERM", None)
    return env


def top(d: Daemon, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli.main", "top", *argv],
        env=_env(d), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture
def two(daemon: Daemon) -> Daemon:
    daemon.write_unit("busy", BUSY)
    daemon.write_unit("idle", IDLE)
    daemon.start()
    for name in ("busy", "idle"):
        daemon.wait_unit(name, lambda u: u["state"] == "running")
    return daemon


def test_once_prints_one_table_sorted_by_cpu(two: Daemon) -> None:
    result = top(two, "--once", "-d", "0.5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "UNIT", "STATE", "CPU%*", "MEM", "MEM%", "PIDS", "READ/s", "WRITE/s", "MEM-PSI",
        "RESTARTS", "HEALTH",
    ]  # fmt: skip
    assert "\033[" not in result.stdout  # a pipe gets no colours
    busy, idle = (line.split() for line in lines[1:3])
    assert busy[0] == "busy" and idle[0] == "idle"
    assert float(busy[2]) > 0 and idle[2] == "0.0"
    assert busy[4] != "-"  # % of its memory_max; idle has none
    assert idle[4] == "-"
    psi = busy[8]
    assert (psi == "-") if cgroup_version() == 1 else float(psi) >= 0


def test_json_once_and_sort(two: Daemon) -> None:
    result = top(two, "--once", "--json", "-d", "0.3", "--sort", "unit")
    assert result.returncode == 0, result.stderr
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(frames) == 1
    frame = frames[0]
    assert frame["sort"] == "unit" and frame["interval"] > 0
    assert [u["name"] for u in frame["units"]] == ["busy", "idle"]
    busy = frame["units"][0]
    assert busy["memory_max"] == 64 << 20
    assert busy["memory_percent"] == pytest.approx(100 * busy["memory_bytes"] / (64 << 20))
    assert busy["cpu_percent"] > 0 and busy["pids"] >= 1
    if cgroup_version() == 1:
        assert busy["memory_pressure_some_avg10"] is None
    else:
        assert busy["memory_pressure_some_avg10"] >= 0


def test_status_shows_pressure_or_says_it_is_absent(two: Daemon) -> None:
    detail = two.unit("busy")
    pressure = detail["usage"]["pressure"]
    status = subprocess.run(
        [sys.executable, "-m", "supervisor.cli.main", "status", "busy"],
        env=_env(two), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if cgroup_version() == 1:
        assert pressure is None
        assert "pressure:     not measured (no PSI" in status.stdout
    else:
        assert set(pressure) == {"cpu", "memory", "io"}
        assert set(pressure["memory"]["some"]) == {"avg10", "avg60", "avg300", "total"}
        assert pressure["cpu"]["some"]["total"] >= 0
        assert "    memory      some " in status.stdout


def test_a_pipe_gets_frame_after_frame(two: Daemon) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli.main", "top", "-d", "0.2", "--json"],
        env=_env(two), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        frames = [json.loads(proc.stdout.readline()) for _ in range(2)]
        for frame in frames:
            assert frame["interval"] > 0
            assert {u["name"] for u in frame["units"]} == {"busy", "idle"}
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_interactive_keys_resort_and_q_quits(two: Daemon) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: sandboxctl top on the pty
        env = {**_env(two), "TERM": "xterm", "COLUMNS": "160", "LINES": "40"}
        argv = [sys.executable, "-m", "supervisor.cli.main", "top", "-d", "0.3"]
        os.execve(sys.executable, argv, env)
    screen = bytearray()
    reaped: list[int] = []

    def seen(text: str) -> bool:
        while select.select([fd], [], [], 0)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the pty
                break
            if not chunk:
                break
            screen.extend(chunk)
        return text.encode() in screen

    try:
        wait_for(lambda: seen("CPU%*"), 60, lambda: f"no table drawn: {bytes(screen)!r}")
        assert b"\033[?1049h" in screen  # the alternate screen, given back at the end
        assert b"\033[32m" in screen  # colours on a terminal: running is green
        os.write(fd, b"m")
        wait_for(lambda: seen("MEM*"), 60, lambda: f"not re-sorted: {bytes(screen)[-2000:]!r}")
        os.write(fd, b"q")
        wait_for(lambda: _reap(pid, reaped), 60, lambda: "q did not quit")
        assert os.waitstatus_to_exitcode(reaped[0]) == 0
        seen("")
        assert screen.endswith(b"\033[?25h\033[?1049l")  # the user's screen is back
    finally:
        if not reaped:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


def _reap(pid: int, into: list[int]) -> bool:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done == pid:
        into.append(status)
    return bool(into)
