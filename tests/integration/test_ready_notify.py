"""`ready = "notify"` end to end: a real daemon, real sandboxes, real sd_notify clients inside
them (Debian's systemd-notify, and python3 writing the datagram itself).

READY=1 gates `running`; STATUS= shows in status; a silent service past `watchdog` is
restarted (last exit `watchdog`); EXTEND_TIMEOUT_USEC= pushes `start_timeout` out; a service
never ready by `start_timeout` is `failed`; STOPPING=1 is the service ending itself (`stopping`,
no stop_signal, then the restart policy); a datagram from outside the unit's cgroup changes
nothing.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from tests.support.daemon_kit import Daemon, pid_alive, wait_for
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root]

# A python3 sd_notify client: notify("READY=1") etc. The kernel attaches the sender's
# credentials because the daemon's socket has SO_PASSCRED.
NOTIFY_PY = """
import os, socket, sys, time
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def notify(text):
    sock.sendto(text.encode(), os.environ["NOTIFY_SOCKET"])
"""


def unit(script: str, *, python: bool = False, mounts: str = "", **service: object) -> str:
    argv = ["/usr/bin/python3", "-u", "-c", NOTIFY_PY + script] if python else [
        "/bin/sh", "-c", script]  # fmt: skip
    text = f'[service]\nexec = {json.dumps(argv)}\nready = "notify"\n'
    service = {"stop_timeout": "300ms", **service}
    text += "".join(f"{k} = {json.dumps(v)}\n" for k, v in service.items())
    text += '[restart]\ndelay = "100ms"\n'
    return text + mounts


def control_dir(daemon: Daemon) -> tuple[Path, str]:
    """A host directory bound read-only at /ctl: the test drops files there as triggers."""
    ctl = daemon.base / "ctl"
    ctl.mkdir(exist_ok=True)
    return ctl, f'[sandbox]\nmounts = [{{ source = "{ctl}", target = "/ctl" }}]\n'


@pytest.mark.cgroup_v2  # the sender's cgroup check, on the v2 VM too
def test_ready_gates_running_and_status_shows(daemon: Daemon) -> None:
    ctl, mounts = control_dir(daemon)
    # systemd-notify (libsystemd) from a shell, after the test says go.
    script = (
        "systemd-notify --status='warming up'; "
        "while [ ! -e /ctl/go ]; do sleep 0.05; done; "
        "systemd-notify --ready --status='serving 42'; exec sleep 1000"
    )
    daemon.write_unit("svc", unit(script, mounts=mounts))
    daemon.start()
    svc = daemon.wait_unit("svc", lambda u: u["pid"] is not None)
    assert svc["state"] == "starting"
    wait_for(lambda: daemon.unit("svc")["notify_status"] == "warming up", 20)
    still = daemon.unit("svc")
    assert still["state"] == "starting" and still["notify_ready"] is False
    (ctl / "go").touch()
    svc = daemon.wait_unit("svc", lambda u: u["state"] == "running", 20)
    detail = daemon.unit("svc")
    assert detail["notify_status"] == "serving 42" and detail["notify_ready"] is True
    assert detail["restarts"] == 0 and detail["pid"] == still["pid"]
    (ready,) = daemon.events("unit.ready")
    assert ready["unit"] == "svc" and ready["status_text"] == "serving 42"


def test_watchdog_restarts_a_silent_service(daemon: Daemon) -> None:
    script = """
notify("READY=1")
for _ in range(4):
    notify("WATCHDOG=1")
    time.sleep(0.1)
notify("STATUS=going silent")
time.sleep(1000)
"""
    daemon.write_unit("dog", unit(script, python=True, watchdog="600ms",
                                  stop_signal="SIGINT"))  # fmt: skip
    daemon.start()
    first = daemon.wait_unit("dog", lambda u: u["state"] == "running", 20)
    dog = daemon.wait_unit("dog", lambda u: u["restarts"] >= 1 and u["state"] == "running", 20)
    assert dog["last_exit"] == "watchdog" and dog["pid"] != first["pid"]
    assert not pid_alive(first["pid"])
    watchdog = daemon.events("unit.watchdog")[0]
    assert watchdog["unit"] == "dog" and watchdog["notify_status"] == "going silent"
    backoff = daemon.events("unit.backoff")[0]
    assert backoff["reason"] == "watchdog"


def test_watchdog_kept_alive_and_watchdog_usec_in_env(daemon: Daemon) -> None:
    script = """
assert os.environ["WATCHDOG_USEC"] == "400000", os.environ
notify("READY=1")
while True:
    notify("WATCHDOG=1")
    time.sleep(0.1)
"""
    daemon.write_unit("alive", unit(script, python=True, watchdog="400ms", stop_signal="SIGINT"))
    daemon.start()
    daemon.wait_unit("alive", lambda u: u["state"] == "running", 20)
    time.sleep(1.5)  # well past the watchdog timeout
    alive = daemon.status()["alive"]
    assert alive["state"] == "running" and alive["restarts"] == 0, alive


def test_extend_timeout_then_ready(daemon: Daemon) -> None:
    script = """
notify("EXTEND_TIMEOUT_USEC=4000000")
time.sleep(1.5)
notify("READY=1")
time.sleep(1000)
"""
    daemon.write_unit("slow", unit(script, python=True, start_timeout="700ms",
                                   stop_signal="SIGINT"))  # fmt: skip
    daemon.start()
    slow = daemon.wait_unit("slow", lambda u: u["state"] != "starting", 20)
    assert slow["state"] == "running" and slow["restarts"] == 0, slow
    (extended,) = daemon.events("unit.start_timeout_extended")
    assert extended["by"] == 4.0


def test_never_ready_is_failed_after_start_timeout(daemon: Daemon) -> None:
    daemon.write_unit("mute", unit("exec sleep 1000", start_timeout="500ms"))
    daemon.start()
    mute = daemon.wait_unit("mute", lambda u: u["state"] == "failed", 20)
    assert mute["last_exit"] == "start-timeout" and mute["restarts"] == 0
    assert "start_timeout" in mute["error"] and mute["pid"] is None
    assert [e["unit"] for e in daemon.events("unit.start_timeout")] == ["mute"]


def test_still_starting_is_readopted_after_kill9_and_becomes_ready(daemon: Daemon) -> None:
    """A run not ready yet when the daemon dies is recorded with its PID: the next daemon
    re-adopts it as `starting` (not killed as an unrecorded leftover), its start_timeout runs
    on, and its READY=1, sent to the new daemon, makes it `running` in place."""
    ctl, mounts = control_dir(daemon)
    script = "while [ ! -e /ctl/go ]; do sleep 0.05; done; systemd-notify --ready; exec sleep 1000"
    daemon.write_unit("late", unit(script, mounts=mounts, start_timeout="120s"))
    daemon.start()
    before = daemon.wait_unit("late", lambda u: u["pid"] is not None)
    assert before["state"] == "starting"
    daemon.wait_recorded()  # records are written off the loop (store.py)
    daemon.kill9()
    daemon.start()
    after = daemon.wait_unit("late", lambda u: u["pid"] is not None)
    assert after["state"] == "starting" and after["pid"] == before["pid"], after
    assert not daemon.events("unit.leftover_killed")
    (ctl / "go").touch()
    ready = daemon.wait_unit("late", lambda u: u["state"] == "running", 20)
    assert ready["pid"] == before["pid"] and ready["restarts"] == 0, ready


def test_readopted_starting_run_keeps_its_start_timeout(daemon: Daemon) -> None:
    daemon.write_unit("mute", unit("exec sleep 1000", start_timeout="4s"))
    daemon.start()
    first = daemon.wait_unit("mute", lambda u: u["pid"] is not None)
    daemon.wait_recorded()
    daemon.kill9()
    daemon.start()
    mute = daemon.wait_unit("mute", lambda u: u["state"] == "failed", 30)
    assert mute["last_exit"] == "start-timeout" and not pid_alive(first["pid"]), mute
    (timeout,) = daemon.events("unit.start_timeout")  # this daemon's log: the adopted run
    assert timeout["pid"] == first["pid"], timeout


@pytest.mark.cgroup_v2  # the sender's cgroup check, on the v2 VM too
def test_stopping_1_is_the_service_ending_itself(daemon: Daemon) -> None:
    ctl, mounts = control_dir(daemon)
    # Debian's systemd-notify; SIGTERM (the stop_signal) would show in the log. It feeds the
    # watchdog until told to drain, then says STOPPING=1 and goes silent.
    script = (
        "trap 'echo got-term' TERM; systemd-notify --ready; "
        "while [ ! -e /ctl/drain ]; do systemd-notify WATCHDOG=1; sleep 0.2; done; "
        "systemd-notify STOPPING=1 STATUS=draining; "
        "while [ ! -e /ctl/done ]; do sleep 0.05; done; echo drained"
    )
    daemon.write_unit("drain", unit(script, mounts=mounts, stop_timeout="1m", watchdog="2s"))
    daemon.start()
    running = daemon.wait_unit("drain", lambda u: u["state"] == "running", 20)
    (ctl / "drain").touch()
    daemon.wait_unit("drain", lambda u: u["state"] == "stopping", 20)
    time.sleep(2.5)  # past the watchdog, which a stopping service no longer feeds
    detail = daemon.unit("drain")
    assert detail["state"] == "stopping" and detail["notify_stopping"] is True
    assert detail["notify_status"] == "draining" and detail["pid"] == running["pid"]
    (ctl / "done").touch()
    drained = daemon.wait_unit("drain", lambda u: u["state"] == "exited", 20)
    assert drained["last_exit"] == "exit-code:0" and drained["restarts"] == 0  # on-failure
    (stopping,) = daemon.events("unit.stopping")
    assert stopping["by"] == "service" and "signal" not in stopping
    wait_for(lambda: "drained" in daemon.output("drain"), 60)
    assert "got-term" not in daemon.output("drain")


@pytest.mark.cgroup_v2  # the sender's cgroup check, on the v2 VM too
def test_messages_from_outside_the_cgroup_are_refused(daemon: Daemon) -> None:
    daemon.write_unit("gated", unit("exec sleep 1000", start_timeout="1m"))
    daemon.start()
    daemon.wait_unit("gated", lambda u: u["pid"] is not None)
    host_side = daemon.state / "notify" / "gated" / "notify.sock"
    assert host_side.exists()
    # Root on the host, not in the unit's cgroup: the socket is reachable, the message is not
    # accepted.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1\nSTATUS=forged", str(host_side))
    wait_for(lambda: bool(daemon.events("notify.rejected")), 60)
    (rejected,) = daemon.events("notify.rejected")
    assert rejected["pid"] == os.getpid() and "not in the unit's cgroup" in rejected["reason"]
    gated = daemon.unit("gated")
    assert gated["state"] == "starting" and gated["notify_status"] is None
    assert gated["notify_rejected"] == 1


def test_example_unit_notify_toml(daemon: Daemon) -> None:
    """units/notify.toml as shipped (with heartbeat.toml, which it waits for)."""
    root = Path(__file__).resolve().parents[2] / "units"
    for name in ("notify", "heartbeat"):
        daemon.write_unit(name, (root / f"{name}.toml").read_text())
    daemon.start()
    starting = daemon.wait_unit("notify", lambda u: u["pid"] is not None, 20)
    assert starting["state"] == "starting"  # warming up for 2s before READY=1
    daemon.wait_unit("notify", lambda u: u["state"] == "running", 20)
    detail = daemon.unit("notify")
    assert detail["notify_status"] == "serving" and detail["restarts"] == 0
    assert daemon.status()["heartbeat"]["state"] == "running"
    wait_for(lambda: "notify: ready" in daemon.output("notify"), 60)
