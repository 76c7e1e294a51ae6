"""A daemon killed while a restart is stopping the old run: the next daemon must finish the
restart (the unit's file and the operator both asked for a running unit), not stop the unit.

Deterministic versions of what the fault-injection storms hit at random: the old run ignores
SIGTERM and has a long stop_timeout, so the daemon is certainly in `stopping` when it dies.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.kit import cgroup_version, pid1s, uname, unit_text, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]


def stubborn(daemon: Any, name: str, variant: int = 0) -> str:
    # sleep as PID 1 ignores SIGTERM: stopping lasts stop_timeout.
    return unit_text(
        ["/bin/sleep", str(100000 + variant)], daemon, name, service={"stop_timeout": "4s"}
    )


def kill_while_stopping(daemon: Any, name: str) -> None:
    wait_for(lambda: daemon.status()[name]["state"] == "stopping", 30)
    daemon.wait_recorded()  # the intent, which the next daemon carries out
    daemon.kill9()


def test_api_restart_interrupted(rdaemons: Callable[[], Any]) -> None:
    daemon = rdaemons()
    name = uname(daemon, "r")
    daemon.write_unit(name, stubborn(daemon, name))
    daemon.start()
    first = daemon.wait_unit(name, lambda u: u["state"] == "running")

    def restart() -> None:
        with contextlib.suppress(OSError, http.client.HTTPException):  # the daemon dies
            daemon.request("POST", f"/v1/units/{name}/restart")

    threading.Thread(target=restart, daemon=True).start()
    kill_while_stopping(daemon, name)
    daemon.start()
    again = daemon.wait_unit(name, lambda u: u["state"] in ("running", "stopped"), 60)
    assert again["state"] == "running", again
    assert again["pid"] != first["pid"] and pid1s(daemon)[name] == [again["pid"]]


def test_reload_restart_interrupted(rdaemons: Callable[[], Any]) -> None:
    daemon = rdaemons()
    name = uname(daemon, "c")
    daemon.write_unit(name, stubborn(daemon, name))
    daemon.start()
    first = daemon.wait_unit(name, lambda u: u["state"] == "running")
    daemon.write_unit(name, stubborn(daemon, name, variant=1))  # changed: reload restarts it
    code, body = daemon.request("POST", "/v1/reload")
    assert code == 200 and name in body["restarted"], body
    kill_while_stopping(daemon, name)
    daemon.start()
    again = daemon.wait_unit(name, lambda u: u["state"] in ("running", "stopped"), 60)
    assert again["state"] == "running", again  # autostart, file unchanged since: must run
    assert again["pid"] != first["pid"] and pid1s(daemon)[name] == [again["pid"]]
