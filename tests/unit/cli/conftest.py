from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from supervisor.api import auth
from supervisor.api.testing import BRIDGE, FakeController, ServerThread, make_status


@pytest.fixture(autouse=True)
def quiet_server_logs() -> Iterator[None]:
    """The in-process server logs with structlog; keep it out of the captured CLI output."""
    with structlog.testing.capture_logs():
        yield


@pytest.fixture
def controller(tmp_path: Path) -> FakeController:
    return FakeController(
        [
            make_status(
                "web", restarts=2, oom_kills=1, recent_exits=["oom-killed"], network=BRIDGE
            ),
            make_status(
                "db",
                "backoff",
                restarts=3,
                last_exit="exit-code:1",
                error="restart in 4s after exit-code:1",  # as the engine words it
                next_start_in=2.5,
            ),
            make_status("cron", "stopped", last_exit="exit-code:0"),
        ],
        log_dir=tmp_path,
    )


@pytest.fixture
def daemon(controller: FakeController, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerThread]:
    sock_dir = Path(tempfile.mkdtemp(prefix="sbx-cli-", dir="/tmp"))
    try:
        policy = auth.Policy(None)
        with ServerThread(controller, sock_dir / "control.sock", policy, history=True) as server:
            monkeypatch.setenv("SANDBOXD_SOCKET", str(server.path))
            yield server
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)
