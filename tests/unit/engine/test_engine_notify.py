"""sd_notify endpoint: parsing, the cgroup check's path mapping, and a real datagram socket."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from supervisor.engine import notify
from supervisor.engine.notify import NotifyEndpoint, NotifyMessage, parse

V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""
V1_SELF = "9:name=systemd:/\n8:pids:/\n4:memory:/\n0::/\n"


def test_parse_assignments() -> None:
    msg = parse(b"READY=1\nSTATUS=serving 3 clients\nMAINPID=1\nEXTEND_TIMEOUT_USEC=5000000", 7)
    assert msg == NotifyMessage(
        pid=7,
        ready=True,
        status="serving 3 clients",
        extend_timeout_usec=5_000_000,
        fields={"READY": "1", "STATUS": "serving 3 clients", "EXTEND_TIMEOUT_USEC": "5000000"},
    )
    assert parse(b"WATCHDOG=1", 1).watchdog  # type: ignore[union-attr]
    assert parse(b"WATCHDOG=trigger", 1).watchdog_trigger  # type: ignore[union-attr]
    assert parse(b"STOPPING=1\nERRNO=2", 1).errno == 2  # type: ignore[union-attr]
    assert parse(b"EXTEND_TIMEOUT_USEC=-1", 1).extend_timeout_usec is None  # type: ignore[union-attr]
    assert parse(b"READY=0", 1).ready is False  # type: ignore[union-attr]
    assert parse(b"\xff\xfe", 1) is None
    assert parse(b"garbage without assignment", 1) is None


def test_membership_reads_proc(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "cgroup").write_text(V1_SELF)
    (tmp_path / "self" / "mountinfo").write_text(V1_MOUNTINFO)
    for pid, text in ((10, "8:pids:/sandboxd/web\n4:memory:/sandboxd/web/sub\n"),
                      (11, "8:pids:/sandboxd/web\n4:memory:/sandboxd/webby\n"),
                      (12, "8:pids:/\n4:memory:/\n")):  # fmt: skip
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cgroup").write_text(text)
    check = notify.cgroup_membership(
        ["/sys/fs/cgroup/memory/sandboxd/web/cgroup.procs",
         "/sys/fs/cgroup/pids/sandboxd/web/cgroup.procs"], proc=str(tmp_path),
    )  # fmt: skip
    assert check(10) and not check(11) and not check(12) and not check(13) and not check(0)


class Endpoint:
    """A real endpoint on a temp dir, driven by a private loop."""

    def __init__(self, accept: Callable[[int], bool]) -> None:
        self.loop = asyncio.new_event_loop()
        self.state = Path(tempfile.mkdtemp(prefix="sbx-notify-", dir="/tmp"))
        self.got: list[NotifyMessage] = []
        self.endpoint = NotifyEndpoint.open(self.state, "web", self.loop, self.got.append, accept)

    def send(self, data: bytes, fds: list[int] | None = None) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            ancillary = []
            if fds:
                ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                              b"".join(fd.to_bytes(4, "little") for fd in fds))]  # fmt: skip
            s.sendmsg([data], ancillary, 0, str(self.endpoint.host_socket))

    def pump(self) -> None:
        """Run the loop until the endpoint has taken every datagram sent so far."""
        while select.select([self.endpoint._sock], [], [], 0)[0]:
            self.loop.run_until_complete(asyncio.sleep(0))

    def close(self) -> None:
        self.endpoint.close()
        self.loop.close()
        os.rmdir(self.state / "notify")
        os.rmdir(self.state)


@pytest.fixture
def ours() -> Iterator[Endpoint]:
    endpoint = Endpoint(lambda pid: pid == os.getpid())
    yield endpoint
    endpoint.close()


def test_layout_and_env(ours: Endpoint) -> None:
    ep = ours.endpoint
    assert ep.host_socket.is_socket() and ep.host_socket.stat().st_mode & 0o777 == 0o666
    assert (ours.state / "notify").stat().st_mode & 0o777 == 0o700
    assert ep.bind == (str(ours.state / "notify" / "web"), "/run/sandboxd-notify", True)
    assert ep.service_env() == {"NOTIFY_SOCKET": "/run/sandboxd-notify/notify.sock"}
    assert ep.service_env(2.5)["WATCHDOG_USEC"] == "2500000"


def test_messages_from_the_unit_are_delivered(ours: Endpoint) -> None:
    ours.send(b"READY=1\nSTATUS=up")
    ours.send(b"WATCHDOG=1")
    ours.pump()
    assert [(m.pid, m.ready, m.status, m.watchdog) for m in ours.got] == [
        (os.getpid(), True, "up", False), (os.getpid(), False, None, True)]  # fmt: skip


def test_passed_fds_are_closed(ours: Endpoint) -> None:
    r, w = os.pipe()
    ours.send(b"BARRIER=1", [w])
    os.close(w)
    ours.pump()
    assert os.read(r, 1) == b""  # EOF: the daemon's copy of w was closed (barrier released)
    os.close(r)
    assert ours.got == []  # a barrier is protocol, not news for the unit runner


def test_oversized_and_garbage_are_dropped(ours: Endpoint) -> None:
    ours.send(b"STATUS=" + b"x" * 20000)
    ours.send(b"no assignment here")
    ours.pump()
    assert ours.got == [] and ours.endpoint.rejected == 2


def test_strangers_are_rejected() -> None:
    endpoint = Endpoint(lambda pid: False)
    try:
        endpoint.send(b"READY=1")
        endpoint.pump()
        assert endpoint.got == [] and endpoint.endpoint.rejected == 1
    finally:
        endpoint.close()


def test_close_removes_the_socket(ours: Endpoint) -> None:
    path = ours.endpoint.host_socket
    ours.endpoint.close()
    assert not path.exists() and not path.parent.exists()
    ours.endpoint.close = lambda: None  # type: ignore[method-assign]
