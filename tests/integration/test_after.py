"""`after` end to end: a unit waits in `starting` until its dependencies are running, ready and
healthy; a failed dependency leaves it waiting (with the reason), not crash-looping; reloading
a changed dependency does not restart its dependents; cycles are validation errors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon_kit import Daemon
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root]

# db: listens on 5432 after a second (healthy only then).
DB = """[service]
exec = ["/usr/bin/python3", "-c", "import socket, time\\ntime.sleep(1)\\ns = socket.socket()\\ns.bind(('127.0.0.1', 5432))\\ns.listen(8)\\nwhile True: s.accept()[0].close()"]
stop_signal = "SIGINT"
stop_timeout = "300ms"
env = { VERSION = "1" }
[health]
tcp = 5432
interval = "200ms"
timeout = "300ms"
start_period = "20s"
"""  # noqa: E501
APP = """[service]
exec = ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]
stop_timeout = "300ms"
after = ["db"]
"""


def test_waits_for_healthy_dependency_then_starts(daemon: Daemon) -> None:
    daemon.write_unit("db", DB)
    daemon.write_unit("app", APP)
    daemon.write_unit("top", APP.replace('["db"]', '["app", "db"]'))
    daemon.start()
    app = daemon.wait_unit("app", lambda u: u["error"] is not None, 60)
    assert app["state"] == "starting" and app["pid"] is None
    assert app["error"].startswith("waiting for db (")
    assert daemon.status()["top"]["error"].startswith("waiting for app (")
    daemon.wait_unit("top", lambda u: u["state"] == "running", 30)
    app = daemon.wait_unit("app", lambda u: u["state"] == "running", 60)
    assert app["error"] is None and app["restarts"] == 0
    # The launch order follows the health of db.
    events = daemon.events()
    order = [(e["event"], e["unit"]) for e in events
             if e.get("event") in ("unit.started", "unit.health")]  # fmt: skip
    healthy = next(i for i, e in enumerate(events)
                   if e.get("event") == "unit.health" and e["health"] == "healthy")  # fmt: skip
    app_started = next(i for i, e in enumerate(events)
                       if e.get("event") == "unit.started" and e["unit"] == "app")  # fmt: skip
    assert healthy < app_started, order
    waiting = [e["reason"] for e in daemon.events("unit.waiting") if e["unit"] == "app"]
    assert waiting and all(r.startswith("waiting for db") for r in waiting)


def test_failed_dependency_leaves_dependents_waiting(daemon: Daemon) -> None:
    # Crashes before it is ever ready (notify, no READY=1): never up for app.
    daemon.write_unit("db", '[service]\nexec = ["/bin/sh", "-c", "sleep 0.2; exit 3"]\n'
                            'ready = "notify"\n[restart]\ndelay = "50ms"\nburst = 2\n')  # fmt: skip
    daemon.write_unit("app", APP)
    daemon.start()
    daemon.wait_unit("db", lambda u: u["state"] == "failed", 20)
    app = daemon.wait_unit("app", lambda u: u["error"] == "waiting for db (failed)", 60)
    assert app["state"] == "starting" and app["restarts"] == 0 and app["pid"] is None
    assert not [e for e in daemon.events("unit.started") if e["unit"] == "app"]
    # `sandboxctl start app` answers at once (it waits, it does not hang the API).
    code, body = daemon.request("POST", "/v1/units/app/start")
    assert code == 200 and body["state"] == "starting", body
    # Fix db: app follows by itself.
    daemon.write_unit("db", DB)
    daemon.signal(signal.SIGHUP)
    daemon.wait_unit("app", lambda u: u["state"] == "running", 30)


def test_reloading_a_dependency_does_not_restart_dependents(daemon: Daemon) -> None:
    daemon.write_unit("db", DB)
    daemon.write_unit("app", APP)
    daemon.start()
    app = daemon.wait_unit("app", lambda u: u["state"] == "running", 30)
    db = daemon.status()["db"]
    daemon.write_unit("db", DB.replace('VERSION = "1"', 'VERSION = "2"'))
    code, result = daemon.request("POST", "/v1/reload")
    assert code == 200 and result["restarted"] == ["db"] and "app" in result["unchanged"]
    daemon.wait_unit("db", lambda u: u["pid"] not in (None, db["pid"]) and
                     u["health"] == "healthy", 30)  # fmt: skip
    after = daemon.status()["app"]
    assert after["pid"] == app["pid"] and after["restarts"] == 0 and after["state"] == "running"


def test_cycles_and_unknown_names_are_validation_errors(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(APP.replace('["db"]', '["b"]'))
    (tmp_path / "b.toml").write_text(APP.replace('["db"]', '["a"]'))
    (tmp_path / "c.toml").write_text(APP.replace('["db"]', '["nope"]'))
    ctl = str(Path(sys.executable).parent / "sandboxctl")
    out = subprocess.run([ctl, "validate", "--no-host-checks", str(tmp_path)],
                         capture_output=True, text=True, check=False,
                         env={**os.environ})  # fmt: skip
    assert out.returncode == 1
    assert "a -> b -> a" in out.stderr or "b -> a -> b" in out.stderr, out.stderr
    assert "nope" in out.stderr, out.stderr
