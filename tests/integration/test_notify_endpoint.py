"""The notify endpoint against a real cgroup and real sd_notify clients (root).

The sender lives in a unit cgroup made by the cgroups Manager (the engine's own), talks through
`systemd-notify` (libsystemd: credentials, the ppid case, the race with a sender that already
exited) and through the sdnotify package; a process outside the cgroup is refused.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _requires import requires_root

from supervisor import cgroups
from supervisor.cgroups import Limits, UnitCgroup
from supervisor.engine.notify import NotifyEndpoint, NotifyMessage, cgroup_membership

pytestmark = [pytest.mark.root, requires_root]


class Rig:
    def __init__(self) -> None:
        self.parent = f"sandboxd-test-notify-{os.getpid()}"
        self.manager = cgroups.new(self.parent)
        self.cgroup: UnitCgroup = self.manager.create("web", Limits())
        self.state = Path(tempfile.mkdtemp(prefix="sbx-notify-", dir="/tmp"))
        self.loop = asyncio.new_event_loop()
        self.got: list[NotifyMessage] = []
        self.endpoint = NotifyEndpoint.open(
            self.state, "web", self.loop, self.got.append,
            cgroup_membership(self.cgroup.procs_files()),
        )  # fmt: skip

    def in_cgroup(self, script: str, until: Callable[[], bool]) -> None:
        """Run a shell script that first moves itself into the unit's cgroup, serving the
        endpoint (as the daemon's loop does) until `until()`; then end the script."""
        join = "; ".join(f"echo $$ > {p}" for p in self.cgroup.procs_files())
        proc = subprocess.Popen(
            ["/bin/sh", "-c", f"{join}; {script}"],
            env={**os.environ, "NOTIFY_SOCKET": str(self.endpoint.host_socket)},
        )
        try:
            self.pump_until(until)
        finally:
            proc.kill()
            proc.wait()

    def pump_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out; got {self.got}"
            self.loop.run_until_complete(asyncio.sleep(0.02))

    def close(self) -> None:
        self.endpoint.close()
        self.loop.close()
        self.cgroup.destroy()
        shutil.rmtree(self.state, ignore_errors=True)
        for d in Path("/sys/fs/cgroup").glob(f"**/{self.parent}"):
            if not d.parent.is_symlink():
                d.rmdir()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    try:
        yield r
    finally:
        r.close()


@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="needs systemd-notify")
def test_systemd_notify_from_the_cgroup(rig: Rig) -> None:
    # libsystemd reports the shell (its parent, as root may): a service's main process.
    rig.in_cgroup("systemd-notify --ready --status='warming up'; exec sleep 30",
                  until=lambda: len(rig.got) == 1)  # fmt: skip
    assert rig.got[0].ready and rig.got[0].status == "warming up"
    rig.in_cgroup("systemd-notify WATCHDOG=1; exec sleep 30", until=lambda: len(rig.got) == 2)
    assert rig.got[1].watchdog and rig.endpoint.rejected == 0


def test_sdnotify_package_from_the_cgroup(rig: Rig) -> None:
    rig.in_cgroup(
        f"exec {sys.executable} -c 'import sdnotify, time; "
        'sdnotify.SystemdNotifier(debug=True).notify("STATUS=ok\\nEXTEND_TIMEOUT_USEC=2000000"); '
        "time.sleep(30)'",
        until=lambda: len(rig.got) == 1,
    )
    assert rig.got[0].status == "ok" and rig.got[0].extend_timeout_usec == 2_000_000


def test_outsiders_are_refused(rig: Rig) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sdnotify; sdnotify.SystemdNotifier(debug=True).notify('READY=1')"],
        env={**os.environ, "NOTIFY_SOCKET": str(rig.endpoint.host_socket)},
        timeout=30, check=True,
    )  # fmt: skip
    assert proc.returncode == 0
    rig.pump_until(lambda: rig.endpoint.rejected == 1)
    assert rig.got == []
