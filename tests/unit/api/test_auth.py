"""SO_PEERCRED decides: root everything, group members GET only, everyone else 403.

Unprivileged peers are real processes (curl run as nobody), not mocked credentials.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from api_helpers import MEMBERS_GID, call_json
from structlog.testing import capture_logs

from supervisor.api import auth
from supervisor.api.testing import FakeController, ServerThread

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody")


def curl_as(
    sock: Path, method: str, url: str, groups: list[int] | None = None
) -> tuple[int | None, str]:
    """Status and body of a request made by uid/gid nobody (with extra groups)."""
    proc = subprocess.run(
        ["curl", "-sS", "--max-time", "5", "--unix-socket", str(sock), "-X", method,
         "-o", "-", "-w", "\n%{http_code}", f"http://x{url}"],
        user=NOBODY, group=NOBODY, extra_groups=groups or [],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    if proc.returncode != 0:
        return None, proc.stderr
    body, _, code = proc.stdout.rpartition("\n")
    return int(code), body


def test_root_may_do_everything(server: ServerThread) -> None:
    assert call_json(server.path, "GET", "/v1/units")[0] == 200
    assert call_json(server.path, "POST", "/v1/units/web/stop")[0] == 200


def test_stranger_is_refused(server: ServerThread, controller: FakeController) -> None:
    for method, url in (
        ("GET", "/v1/units"),
        ("GET", "/v1/units/web/logs"),
        ("GET", "/metrics"),
        ("GET", "/v1/openapi.json"),
        ("POST", "/v1/units/web/stop"),
        ("POST", "/v1/reload"),
    ):
        status, body = curl_as(server.path, method, url)
        assert status == 403, (method, url, body)
        assert '"code": "forbidden"' in body and f"uid {NOBODY}" in body
    assert controller.calls == []


def test_group_member_may_read_only(server: ServerThread, controller: FakeController) -> None:
    status, body = curl_as(server.path, "GET", "/v1/units", groups=[MEMBERS_GID])
    assert status == 200 and '"units"' in body
    assert curl_as(server.path, "GET", "/v1/units/web", groups=[MEMBERS_GID])[0] == 200
    assert curl_as(server.path, "GET", "/metrics", groups=[MEMBERS_GID])[0] == 200
    with capture_logs() as logs:
        for url in ("/v1/units/web/stop", "/v1/units/web/restart", "/v1/reload"):
            status, body = curl_as(server.path, "POST", url, groups=[MEMBERS_GID])
            assert status == 403 and "read-only" in body
    assert controller.calls == []
    refused = [e for e in logs if e["event"] == "api.refused"]
    assert [(e["uid"], e["method"], e["path"]) for e in refused] == [
        (NOBODY, "POST", "/v1/units/web/stop"),
        (NOBODY, "POST", "/v1/units/web/restart"),
        (NOBODY, "POST", "/v1/reload"),
    ]


def test_primary_group_counts_too() -> None:
    policy = auth.Policy(group_gid=MEMBERS_GID)
    member = auth.PeerCred(pid=1, uid=1000, gid=MEMBERS_GID, groups=())
    assert policy.access(member) is auth.Access.READ
    assert policy.allows(member, "HEAD") and not policy.allows(member, "POST")
    assert policy.access(auth.PeerCred(1, 0, 0, ())) is auth.Access.FULL
    assert (
        auth.Policy(group_gid=None).access(auth.PeerCred(1, 1000, 1000, (5,))) is auth.Access.NONE
    )


def test_socket_mode_keeps_strangers_out_before_http(
    controller: FakeController, sock_dir: Path
) -> None:
    policy = auth.Policy(group_gid=MEMBERS_GID)
    with ServerThread(controller, sock_dir / "control.sock", policy) as server:
        info = server.path.stat()
        assert (info.st_mode & 0o777, info.st_gid) == (0o660, MEMBERS_GID)
        status, err = curl_as(server.path, "GET", "/v1/units")
        assert status is None and "connect" in err.lower()  # EACCES at connect(2)
        assert curl_as(server.path, "GET", "/v1/units", groups=[MEMBERS_GID])[0] == 200
