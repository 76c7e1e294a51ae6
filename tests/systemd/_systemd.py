"""Shared by conftest.py and the tests: when this layer may run, the journal for reports, and
the helpers of the scenarios (commands, waits, the daemon's units over its socket)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from supervisor.cli.client import Client, Unreachable
from tests.support.waiting import poll

E2E_ENV = "SANDBOXD_SYSTEMD_E2E"
SOCKET = "/run/sandboxd/control.sock"
# The guest is TCG-emulated: Python runs ~5x slower than on a host.
SLOW = 120.0
T = TypeVar("T")


def skip_reason() -> str | None:
    if os.environ.get(E2E_ENV) != "1":
        return f"installs into /opt and /etc: only in a throw-away VM ({E2E_ENV}=1)"
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.isdir("/run/systemd/system"):
        return "needs systemd as PID 1: run scripts/test-systemd.sh"
    if not os.path.isfile("/sys/fs/cgroup/cgroup.controllers"):
        return "needs a pure cgroup v2 host"
    return None


def journal_tail(lines: int = 60) -> str:
    out = subprocess.run(
        ["journalctl", "--no-pager", "-n", str(lines),
         "-u", "sandboxd", "-u", "sandboxd-sandboxes"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return out.stdout + out.stderr


def sh(*argv: str, check: bool = True, timeout: float = SLOW) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and out.returncode != 0:
        pytest.fail(f"{' '.join(argv)}: exit {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = SLOW) -> T:
    """`probe()`'s first true answer (tests.support.waiting's loop; an unreachable daemon
    between two runs, or a process gone, counts as not yet)."""
    last: T | None = None

    def ready() -> bool:
        nonlocal last
        try:
            last = probe()
        except (OSError, Unreachable):
            last = None
        return bool(last)

    if not poll(ready, timeout, interval=0.5):
        pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
    assert last is not None
    return last


def units() -> dict[str, dict[str, Any]]:
    return {u["name"]: u for u in Client(SOCKET).units()}


def running(*names: str) -> Callable[[], dict[str, dict[str, Any]] | None]:
    def probe() -> dict[str, dict[str, Any]] | None:
        now = units()
        ok = all(now.get(n, {}).get("state") == "running" for n in names)
        return now if ok else None

    return probe


def main_pid() -> int:
    return int(sh("systemctl", "show", "-p", "MainPID", "--value", "sandboxd").stdout)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
