"""Service output in the real journal: sandboxd installed as a systemd service (install.sh),
whose default output there is `both`, runs a unit that writes a line to stdout and one to
stderr; journald has both with the right PRIORITY, SYSLOG_IDENTIFIER, SANDBOXD_UNIT and the
service's PID as _PID, `journalctl -u sandboxd SANDBOXD_UNIT=...` finds them, and the log
file has them too. Runs in the systemd VM (scripts/test-systemd.sh); installs, then
uninstalls with --purge and removes its unit file, leaving the VM as it found it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _systemd import SOCKET, running, sh, skip_reason, wait_for

from supervisor.cli.client import Client

_REASON = skip_reason()
pytestmark = [
    pytest.mark.systemd,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    pytest.mark.timeout(600),
]

CHECKOUT = Path(__file__).resolve().parents[2]
WHEELS = Path(os.environ.get("SANDBOXD_WHEELS", CHECKOUT / "build" / "wheels"))
UNIT = Path("/etc/sandboxd/units/speaker.toml")
SPEAKER = """
[service]
exec = ["/bin/sh", "-c", '''
echo "to stdout $$"
echo "to stderr $$" >&2
trap "exit 0" TERM
while :; do sleep 1 & wait $!; done''']
stop_timeout = "3s"
"""


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    sh(str(CHECKOUT / "packaging" / "install.sh"), "--wheels", str(WHEELS), timeout=600)
    try:
        sh("systemctl", "start", "sandboxd")
        yield
    finally:
        UNIT.unlink(missing_ok=True)
        sh(str(CHECKOUT / "packaging" / "uninstall.sh"), "--purge", check=False, timeout=300)


def entries(*matches: str) -> list[dict[str, Any]]:
    out = sh("journalctl", "-o", "json", "--no-pager", *matches).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_service_lines_reach_the_journal_as_the_service(installed: None) -> None:
    UNIT.write_text(SPEAKER)
    sh("/usr/local/bin/sandboxctl", "reload")
    pid = wait_for("speaker running", running("speaker"))["speaker"]["pid"]

    def both_lines() -> list[dict[str, Any]] | None:
        found = entries("SANDBOXD_UNIT=speaker")
        return found if len(found) >= 2 else None

    found = {e["MESSAGE"]: e for e in wait_for("speaker's two lines", both_lines)}
    # $$ is 1: the shell is PID 1 of the sandbox's PID namespace
    out, err = found["to stdout 1"], found["to stderr 1"]
    assert (out["PRIORITY"], err["PRIORITY"]) == ("6", "3")
    for entry in (out, err):
        assert entry["SYSLOG_IDENTIFIER"] == "speaker"
        assert entry["_PID"] == str(pid), "journald took the service's PID from the credentials"
        assert entry["_SYSTEMD_UNIT"] == "sandboxd-sandboxes.service", entry.get("_SYSTEMD_CGROUP")
        assert entry["_SYSTEMD_CGROUP"].endswith("/sandboxd-sandboxes.service/units/speaker")

    by_unit = entries("-u", "sandboxd", "SANDBOXD_UNIT=speaker")
    assert {e["MESSAGE"] for e in by_unit} >= {"to stdout 1", "to stderr 1"}
    log = Path("/var/log/sandboxd/speaker.log").read_text()
    assert "to stdout 1" in log and "to stderr 1" in log, "output = both by default under systemd"
    assert Client(SOCKET).unit("speaker")["output"] == "both"
