from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import MEMBERS_GID

from supervisor.api import auth
from supervisor.api.testing import BRIDGE, FakeController, ServerThread, make_status


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Unix sockets cannot live on the 9p share the checkout may sit on: use /tmp.
    path = Path(tempfile.mkdtemp(prefix="sbx-api-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def controller(tmp_path: Path) -> FakeController:
    return FakeController(
        [
            make_status("web", network=BRIDGE),
            make_status("db", "backoff", restarts=3, error="exit-code:1", next_start_in=2.5),
            make_status("cron", "stopped"),
        ],
        log_dir=tmp_path,
    )


@pytest.fixture
def server(controller: FakeController, sock_dir: Path) -> Iterator[ServerThread]:
    policy = auth.Policy(group_gid=MEMBERS_GID)
    with ServerThread(controller, sock_dir / "control.sock", policy, mode=0o666) as running:
        yield running
