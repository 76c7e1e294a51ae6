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
import structlog

from supervisor import cgroups
from supervisor.cgroups import Limits, UnitCgroup, member_check
from supervisor.engine.notify import NotifyEndpoint, NotifyMessage
from tests.support.requires import requires_root

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
            member_check(self.cgroup),
        )  # fmt: skip

    def in_cgroup(self, script: str, until: Callable[[], bool]) -> None:
        """Run a shell script that first moves itself into the unit's cgroup, serving the
        endpoint (as the daemon's loop does) until `until()` and the script is done; the shell
        then sleeps (a service's main process lives on), and is killed."""
        join = "; ".join(f"echo $$ > {p}" for p in self.cgroup.procs_files())
        done = self.state / "done"
        done.unlink(missing_ok=True)
        proc = subprocess.Popen(
            ["/bin/sh", "-c", f"{join}; {script}; touch {done}; exec sleep 300"],
            env={**os.environ, "NOTIFY_SOCKET": str(self.endpoint.host_socket)},
        )
        try:
            self.pump_until(lambda: until() and done.exists())
        finally:
            proc.kill()
            proc.wait()

    def pump_until(self, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out; got {self.got}"
            self.loop.run_until_complete(asyncio.sleep(0.02))

    def close(self) -> None:
        self.endpoint.close()
        self.loop.close()
        self.cgroup.destroy()
        shutil.rmtree(self.state, ignore_errors=True)
        root = Path("/sys/fs/cgroup")
        for d in [root / self.parent, *root.glob(f"*/{self.parent}")]:
            if d.is_dir() and not d.parent.is_symlink():
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
    with structlog.testing.capture_logs() as logs:
        rig.in_cgroup("systemd-notify --ready --status=warming", until=lambda: len(rig.got) == 1)
        assert rig.got[0].ready and rig.got[0].status == "warming"
        rig.in_cgroup("systemd-notify WATCHDOG=1", until=lambda: len(rig.got) == 2)
    assert rig.got[1].watchdog and rig.endpoint.rejected == 0, (logs, rig.got)


def test_sdnotify_package_from_the_cgroup(rig: Rig) -> None:
    # The sender lives on after sending, as a service does: one that exits and is reaped before
    # the daemon reads its datagram cannot be proven to be in the cgroup and is refused (as by
    # systemd); the systemd-notify test above covers that case through the ppid.
    done = rig.state / "done"  # written by the sender itself: the shell's own line never runs
    rig.in_cgroup(
        f"exec {sys.executable} -c 'import sdnotify, time; "
        'sdnotify.SystemdNotifier(debug=True).notify("STATUS=ok\\nEXTEND_TIMEOUT_USEC=2000000"); '
        f'open("{done}", "w").close(); time.sleep(60)\'',
        until=lambda: len(rig.got) == 1,
    )
    assert rig.got[0].status == "ok" and rig.got[0].extend_timeout_usec == 2_000_000


def test_outsiders_are_refused(rig: Rig) -> None:
    send = "import sdnotify; sdnotify.SystemdNotifier(debug=True).notify('READY=1')"
    proc = subprocess.run(
        [sys.executable, "-c", send],
        env={**os.environ, "NOTIFY_SOCKET": str(rig.endpoint.host_socket)},
        timeout=30, check=True,
    )  # fmt: skip
    assert proc.returncode == 0
    rig.pump_until(lambda: rig.endpoint.rejected == 1)
    assert rig.got == []
