"""Fuzz every operation from the served OpenAPI document (schemathesis), bounded in time.

The server must answer each generated request with a documented status, content type and body
shape, never a 5xx; the event stream is left out (it never ends by design) and log requests are
made non-following for the same reason.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from api_helpers import MEMBERS_GID, unix_session
from hypothesis import HealthCheck, settings

from supervisor.api import auth
from supervisor.api.openapi import document
from supervisor.api.testing import FakeController, ServerThread, make_status

schema = schemathesis.openapi.from_dict(document()).exclude(operation_id=["events"])
# CI: the "repeatable" profile (tests/conftest.py) derandomizes, so these 25 per operation are the
# same on every run. scripts/fuzz.sh: the "fuzz" profile, random and many more.
EXAMPLES = 2000 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 25


@pytest.fixture(scope="module")
def fuzz_target() -> Iterator[tuple[ServerThread, Any]]:
    sock_dir = Path(tempfile.mkdtemp(prefix="sbx-fuzz-", dir="/tmp"))
    log_dir = Path(tempfile.mkdtemp(prefix="sbx-fuzz-logs-"))
    (log_dir / "web.log").write_text("hello\nworld\n")
    controller = FakeController([make_status("web"), make_status("db", "failed")], log_dir)
    policy = auth.Policy(group_gid=MEMBERS_GID)
    try:
        with ServerThread(controller, sock_dir / "control.sock", policy) as server:
            yield server, unix_session(server.path)
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)
        shutil.rmtree(log_dir, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck))
def test_api_conforms(case: schemathesis.Case[Any], fuzz_target: tuple[ServerThread, Any]) -> None:
    _, session = fuzz_target
    if case.operation.definition.raw.get("operationId") == "unitLogs":
        case.query = {**(case.query or {}), "follow": 0}
    response = case.call(base_url="http://localhost", session=session, timeout=10)
    case.validate_response(response)
    assert response.status_code < 500
