"""Shared by conftest.py and the tests: when this layer may run, and the journal for reports."""

from __future__ import annotations

import os
import subprocess

E2E_ENV = "SANDBOXD_SYSTEMD_E2E"


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
