"""sd_notify endpoint: parsing and a real datagram socket."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from supervisor.engine.notify import NotifyEndpoint, NotifyMessage, parse


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
