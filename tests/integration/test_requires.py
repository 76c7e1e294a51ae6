"""`requires` end to end: a unit is stopped when a unit it requires leaves `running` (OOM-killed
and restarted, stopped by the operator, failed) and starts again once that unit is back;
`wants` orders the start and binds nothing.

db waits for a file the test creates in a directory bound into it, then does what the file
says (an allocation over its memory limit, or an exit): the test decides when, never a timer.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.support.daemon_kit import Daemon, pid_alive, wait_for
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root]

DB_SCRIPT = """
import os, sys, time
while not os.listdir('/ctl'):
    time.sleep(0.05)
what = os.listdir('/ctl')[0]
os.unlink('/ctl/' + what)
if what == 'oom':
    b = b'\\1' * (200 << 20)
sys.exit(3)
"""
APP = """[service]
exec = ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]
stop_timeout = "2s"
"""


def db_unit(ctl: Path, restart: str = 'delay = "100ms"') -> str:
    return (
        f"[service]\nexec = {json.dumps(['/usr/bin/python3', '-c', DB_SCRIPT])}\n"
        'stop_signal = "SIGINT"\nstop_timeout = "1s"\n'
        '[resources]\nmemory_max = "48M"\nswap_max = "0"\n'
        f"[restart]\n{restart}\n"
        f'[sandbox]\nmounts = [{{ source = "{ctl}", target = "/ctl", read_only = false }}]\n'
    )


def _setup(daemon: Daemon, restart: str = 'delay = "100ms"') -> Path:
    ctl = daemon.base / "ctl"
    ctl.mkdir()
    ctl.chmod(0o777)  # db's root (an unprivileged host uid, its own user namespace) unlinks here
    daemon.write_unit("db", db_unit(ctl, restart))
    daemon.write_unit("web", APP + 'requires = ["db"]\n')
    daemon.write_unit("side", APP + 'wants = ["db"]\n')
    daemon.start()
    daemon.wait_unit("web", lambda u: u["state"] == "running", 60)
    daemon.wait_unit("side", lambda u: u["state"] == "running", 60)
    return ctl


def _downs(daemon: Daemon, unit: str) -> list[dict[str, object]]:
    return [e for e in daemon.events("unit.dependency_down") if e["unit"] == unit]


def test_oom_killed_dependency_stops_and_restarts_its_dependent(daemon: Daemon) -> None:
    ctl = _setup(daemon)
    web, side = daemon.unit("web"), daemon.unit("side")
    db = daemon.unit("db")
    assert db["required_by"] == ["web"] and db["wanted_by"] == ["side"]
    (ctl / "oom").touch()
    db = daemon.wait_unit("db", lambda u: u["restarts"] == 1 and u["state"] == "running", 60)
    assert db["last_exit"] == "oom-killed" and db["oom_kills"] >= 1
    after = daemon.wait_unit("web", lambda u: u["state"] == "running" and u["pid"] != web["pid"])
    assert after["restarts"] == 0
    (down,) = _downs(daemon, "web")
    assert down["dependency"] == "db" and down["dependency_state"] in ("stopping", "backoff")
    # It was stopped, and waited for db rather than starting against it.
    waited = [e["reason"] for e in daemon.events("unit.waiting") if e["unit"] == "web"]
    assert waited and all(r.startswith("waiting for db (") for r in waited), waited
    starts = [e for e in daemon.events() if e.get("event") == "unit.started"]
    db_back = max(i for i, e in enumerate(starts) if e["unit"] == "db")
    web_back = max(i for i, e in enumerate(starts) if e["unit"] == "web")
    assert db_back < web_back
    # wants binds nothing: side kept its run.
    assert daemon.unit("side")["pid"] == side["pid"] and not _downs(daemon, "side")


def test_operator_stop_of_a_dependency_stops_its_dependent_until_it_is_back(
    daemon: Daemon,
) -> None:
    _setup(daemon)
    side = daemon.unit("side")
    code, body = daemon.request("POST", "/v1/units/db/stop")
    assert code == 200 and body["state"] == "stopped", body
    web = daemon.wait_unit("web", lambda u: u["error"] == "waiting for db (stopped)", 60)
    assert web["state"] == "starting" and web["pid"] is None
    assert daemon.unit("side")["pid"] == side["pid"]
    code, body = daemon.request("POST", "/v1/units/db/start")
    assert code == 200, body
    web = daemon.wait_unit("web", lambda u: u["state"] == "running", 60)
    assert web["error"] is None and web["restarts"] == 0


def test_failed_dependency_leaves_its_dependent_stopped_and_waiting(daemon: Daemon) -> None:
    # burst = 1: db's first exit already hits the start limit, so it fails for good.
    ctl = _setup(daemon, 'delay = "100ms"\nburst = 1')
    (ctl / "exit").touch()
    daemon.wait_unit("db", lambda u: u["state"] == "failed", 60)
    web = daemon.wait_unit("web", lambda u: u["error"] == "waiting for db (failed)", 60)
    assert web["state"] == "starting" and web["pid"] is None
    # An operator's start of web starts db too (requires pulls it in); both come back.
    code, body = daemon.request("POST", "/v1/units/web/start")
    assert code == 200, body
    daemon.wait_unit("web", lambda u: u["state"] == "running", 60)
    assert daemon.unit("db")["state"] == "running"


def test_a_dependency_lost_while_no_daemon_ran_stops_its_dependent(daemon: Daemon) -> None:
    _setup(daemon)
    web, db = daemon.unit("web"), daemon.unit("db")
    daemon.wait_recorded()
    daemon.kill9()
    os.kill(db["pid"], signal.SIGKILL)  # db's PID 1, started by this test's daemon
    wait_for(lambda: not pid_alive(db["pid"]), 60)
    daemon.start()
    # The new daemon finds db lost (then restarts it) and web re-adopted but bound to it.
    after = daemon.wait_unit("web", lambda u: u["state"] == "running" and u["pid"] != web["pid"])
    assert after["restarts"] == 0
    assert [e for e in daemon.events("unit.dependency_down", run=2) if e["unit"] == "web"]
    assert daemon.unit("db")["state"] == "running"
