"""The socket's life: created 0660 with the group, stale sockets replaced, live ones kept."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import pytest
import structlog

from supervisor.api import auth
from supervisor.api.server import SocketInUse, bind_socket, serve
from supervisor.api.testing import FakeController, ServerThread, make_status
from supervisor.config import DaemonConfig
from supervisor.errors import SupervisorError


def test_stale_socket_is_replaced(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: a daemon that was killed
    sock = bind_socket(path, None)
    try:
        assert path.is_socket() and path.stat().st_mode & 0o777 == 0o660
    finally:
        sock.close()


def test_live_socket_is_not_stolen(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    first = bind_socket(path, None)
    try:
        with pytest.raises(SocketInUse, match="another sandboxd"):
            bind_socket(path, None)
    finally:
        first.close()


def test_regular_file_is_not_removed(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    path.write_text("precious")
    with pytest.raises(SupervisorError, match="not a socket"):
        bind_socket(path, None)
    assert path.read_text() == "precious"


def test_serve_from_config_and_close_removes_socket(sock_dir: Path) -> None:
    config = DaemonConfig(socket=sock_dir / "run" / "control.sock", group="no-such-group-x")

    async def scenario() -> None:
        server = await serve(FakeController([make_status("web")]), config)
        assert config.socket_path.is_socket()
        assert server.metrics.registry is not None
        await server.close()
        assert not config.socket_path.exists()

    asyncio.run(scenario())


def test_a_missing_group_is_one_info_line_with_the_fix(sock_dir: Path) -> None:
    config = DaemonConfig(socket=sock_dir / "control.sock", group="no-such-group-x")

    async def scenario() -> None:
        server = await serve(FakeController([make_status("web")]), config)
        await server.close()

    with structlog.testing.capture_logs() as logs:
        asyncio.run(scenario())
    said = [e for e in logs if e["event"] == "api.no_group"]
    assert len(said) == 1 and said[0]["log_level"] == "info", said
    assert "groupadd --system no-such-group-x" in said[0]["detail"]
    assert not [e for e in logs if e["log_level"] == "warning"], logs


def test_curl_works(server: ServerThread) -> None:
    out = subprocess.run(
        ["curl", "-sS", "--unix-socket", str(server.path), "http://x/v1/units"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert '"name": "web"' in out


def test_policy_from_group_name() -> None:
    assert auth.Policy.for_group("users").group_gid == 100
    assert auth.Policy.for_group("no-such-group-x").group_gid is None
