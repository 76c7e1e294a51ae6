"""Devices and CPU pinning through the daemon: unit file -> engine -> cgroup -> sandbox.

Proves the wiring: `sandbox.devices` reaches the unit cgroup's allowlist on start, a
resource-only reload moves a running service to other CPUs without a restart and keeps its
devices, and a device path that is not a device node fails the unit with a clear error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from tests.support.daemon_kit import Daemon, wait_for
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root, pytest.mark.cgroup_v2, pytest.mark.cgroup_v1]

# Prints "cpus=<list> tun=<result>" whenever its CPU list changes, re-opening tun each time.
SERVICE = r"""
import errno, os, time
last = None
while True:
    with open("/proc/self/status") as f:
        cpus = [l.split(":")[1].strip() for l in f if l.startswith("Cpus_allowed_list")][0]
    if cpus != last:
        try:
            os.close(os.open("/dev/net/tun", os.O_RDWR))
            tun = "ok"
        except OSError as err:
            tun = errno.errorcode[err.errno]
        print(f"cpus={cpus} tun={tun}", flush=True)
        last = cpus
    time.sleep(0.05)
"""


def _unit(cpus: str, device: str = "/dev/net/tun") -> str:
    return (
        f"[service]\nexec = {json.dumps(['/usr/bin/python3', '-c', SERVICE])}\n"
        'stop_timeout = "500ms"\n'
        f'[sandbox]\ndevices = [{{ path = {json.dumps(device)}, access = "rw" }}]\n'
        # Host ids: /dev/net/tun is root's alone (0600) on some hosts, and a default unit's
        # root is not its owner (README, User namespaces); the device cgroup is under test.
        'user_namespace = "host"\n'
        f"[resources]\ncpus = {json.dumps(cpus)}\n"
    )


@pytest.fixture
def tun() -> str:
    if not os.path.exists("/dev/net/tun"):
        subprocess.run(["modprobe", "tun"], check=False, capture_output=True)
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun on this host")
    return "/dev/net/tun"


def test_devices_and_live_cpu_move_through_the_daemon(daemon: Daemon, tun: str) -> None:
    daemon.write_unit("pinned", _unit("1"))
    daemon.write_unit("bad", _unit("0", device="/dev/shm"))
    daemon.start()
    log = daemon.logs / "pinned.log"
    first = daemon.wait_unit("pinned", lambda u: u["state"] == "running", 90)
    wait_for(lambda: log.exists() and "cpus=1 tun=ok\n" in log.read_text(), 90, log.read_text)

    daemon.write_unit("pinned", _unit("0"))
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "cpus=0 tun=ok\n" in log.read_text(), 90, log.read_text)
    assert daemon.status()["pinned"]["pid"] == first["pid"], "moved live, not restarted"
    assert log.read_text() == "cpus=1 tun=ok\ncpus=0 tun=ok\n", "the device kept working"

    bad = daemon.wait_unit("bad", lambda u: u["state"] in ("failed", "backoff"), 90)
    assert "/dev/shm is not a device node" in (bad["error"] or "") + str(bad["last_exit"])
