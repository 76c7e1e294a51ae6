"""Crash safety: services outlive the daemon and the next daemon re-adopts them."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.daemon_kit import Daemon, pid_alive, wait_for
from tests.support.requires import requires_root

# A killed daemon's sandboxes must go to init, as on a real host (see not_a_subreaper).
pytestmark = [pytest.mark.root, requires_root, pytest.mark.usefixtures("not_a_subreaper")]

SLEEPER = """
[service]
exec = ["/bin/sh", "-c", "exec sleep 1000"]
stop_timeout = "500ms"
[restart]
delay = "100ms"
"""
# Prints a counter every 10 ms: gaps or a dead service show lost output or a SIGPIPE.
COUNTER = """
[service]
exec = ["/bin/sh", "-c", "i=0; while :; do echo $i; i=$((i+1)); sleep 0.01; done"]
stop_timeout = "500ms"
"""


@pytest.mark.cgroup_v2
def test_kill9_readopt_and_lost(daemon: Daemon) -> None:
    daemon.write_unit("a", SLEEPER)
    daemon.write_unit("b", SLEEPER)
    daemon.start()
    a = daemon.wait_unit("a", lambda u: u["state"] == "running")
    b = daemon.wait_unit("b", lambda u: u["state"] == "running")
    daemon.wait_recorded()
    daemon.kill9()
    assert pid_alive(a["pid"]) and pid_alive(b["pid"])
    os.kill(b["pid"], signal.SIGKILL)  # b's sandbox, started by this test's daemon
    wait_for(lambda: not pid_alive(b["pid"]), 60)
    time.sleep(0.2)
    daemon.start()
    again = daemon.wait_unit("a", lambda u: u["state"] == "running")
    assert again["pid"] == a["pid"] and again["restarts"] == 0
    assert again["started_at"] == a["started_at"]  # uptime preserved
    assert [e["unit"] for e in daemon.events("unit.adopted")] == ["a"]
    # b ended while no daemon watched: `lost`, then restarted per on-failure.
    lost = daemon.wait_unit("b", lambda u: u["state"] == "running" and u["restarts"] == 1)
    assert lost["last_exit"] == "lost" and lost["pid"] != b["pid"]
    (exited,) = [e for e in daemon.events("unit.exited") if e["unit"] == "b"]
    assert exited["reason"] == "lost"
    # A re-adopted service that ends now is watched through its pidfd.
    os.kill(a["pid"], signal.SIGKILL)
    a2 = daemon.wait_unit("a", lambda u: u["state"] == "running" and u["restarts"] == 1)
    assert a2["pid"] != a["pid"]
    kernel = tuple(int(x) for x in os.uname().release.split(".")[:2])
    assert a2["last_exit"] == ("signal:SIGKILL" if kernel >= (6, 15) else "lost")
    assert daemon.stop() == 0


def test_on_exit_leave_then_readopt(daemon: Daemon) -> None:
    daemon.config.write_text('on_exit = "leave"\n')
    daemon.write_unit("a", SLEEPER)
    daemon.start()
    a = daemon.wait_unit("a", lambda u: u["state"] == "running")
    assert daemon.stop() == 0
    assert pid_alive(a["pid"])
    assert not daemon.events("unit.stopping")
    daemon.start()
    again = daemon.wait_unit("a", lambda u: u["state"] == "running")
    assert (again["pid"], again["started_at"]) == (a["pid"], a["started_at"])
    code, body = daemon.request("POST", "/v1/units/a/stop")
    assert code == 200 and body["state"] == "stopped", body
    assert daemon.stop() == 0
    assert not pid_alive(a["pid"])


def test_corrupt_state_file_is_ignored(daemon: Daemon) -> None:
    (daemon.state / "units").mkdir(parents=True)
    (daemon.state / "units" / "junk.json").write_text("{torn")
    (daemon.state / "units" / "foreign.json").write_text('{"hello": "world"}')
    daemon.write_unit("a", SLEEPER)
    daemon.start()
    daemon.wait_unit("a", lambda u: u["state"] == "running")
    ignored = sorted(os.path.basename(e["path"]) for e in daemon.events("store.ignored"))
    assert ignored == ["foreign.json", "junk.json"]
    assert daemon.stop() == 0


def test_output_survives_a_daemon_restart(daemon: Daemon) -> None:
    daemon.write_unit("talk", COUNTER)
    daemon.start()
    talk = daemon.wait_unit("talk", lambda u: u["state"] == "running")
    pid = talk["pid"]
    # The service's stdout pipe has a second reader: PID 1 itself holds its read end (kept fd).
    out = os.readlink(f"/proc/{pid}/fd/1")
    holders = [fd for fd in os.listdir(f"/proc/{pid}/fd") if fd not in ("0", "1", "2")]
    assert [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in holders] == [out]
    time.sleep(0.3)
    daemon.wait_recorded()
    daemon.kill9()
    log = daemon.logs / "talk.log"
    at_kill = len(log.read_text().split())
    time.sleep(1.0)  # the service keeps writing into the pipe buffer meanwhile
    assert pid_alive(pid), "no reader left: SIGPIPE"
    daemon.start()
    daemon.wait_unit("talk", lambda u: u["pid"] == pid)
    # Lines written while no daemon ran, and after, reach the log (however slow the machine).
    wait_for(lambda: len(log.read_text().split()) > at_kill + 50, 60)
    again = daemon.status()["talk"]
    assert (again["pid"], again["restarts"], again["last_exit"]) == (pid, 0, None)
    assert not [e for e in daemon.events("unit.exited") if e.get("unit") == "talk"]
    assert daemon.stop() == 0
    numbers = [int(n) for n in log.read_text().split()]
    assert numbers == list(range(len(numbers))), "every line once, in order: nothing lost"
