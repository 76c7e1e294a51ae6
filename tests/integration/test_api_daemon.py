"""The control API of a real daemon: curl, peer credentials, streams, metrics, and abuse while
the daemon goes on supervising (a crashing unit keeps being restarted throughout)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

from tests.support.daemon_kit import UnixHTTPConnection
from tests.support.requires import cgroup_version, requires_root
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from daemon_kit import Daemon

pytestmark = [pytest.mark.root, requires_root]

NOBODY, USERS_GID = 65534, 100
TICKER = """
[service]
exec = ["/bin/sh", "-c", "echo started; while true; do echo tick; sleep 0.2; done"]
stop_timeout = "500ms"
"""
CRASHER = """
[service]
exec = ["/bin/sh", "-c", "sleep 0.2; exit 3"]
[restart]
policy = "always"
delay = "50ms"
max_delay = "100ms"
burst = 10000
interval = "1s"
"""


@pytest.fixture
def running(daemon: Daemon) -> Daemon:
    daemon.config.write_text('group = "users"\n')
    daemon.base.chmod(0o755)  # mkdtemp's 0700 would keep nobody from even reaching the socket
    daemon.write_unit("web", TICKER)
    daemon.start()
    daemon.wait_unit("web", lambda u: u["state"] == "running")
    return daemon


def curl(sock: Path, method: str, url: str, *, as_nobody: bool = False,
         groups: list[int] | None = None) -> tuple[int | None, str]:  # fmt: skip
    proc = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--unix-socket", str(sock), "-X", method,
         "-o", "-", "-w", "\n%{http_code}", f"http://x{url}"],
        user=NOBODY if as_nobody else None, group=NOBODY if as_nobody else None,
        extra_groups=groups if as_nobody else None,
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    if proc.returncode != 0:
        return None, proc.stderr
    body, _, code = proc.stdout.rpartition("\n")
    return int(code), body


def test_curl_lists_units(running: Daemon) -> None:
    status, body = curl(running.socket, "GET", "/v1/units")
    assert status == 200
    assert [u["name"] for u in json.loads(body)["units"]] == ["web"]
    info = running.socket.stat()
    assert (info.st_mode & 0o777, info.st_gid) == (0o660, USERS_GID)


def test_group_members_read_strangers_cannot_connect(running: Daemon) -> None:
    pid = running.unit("web")["pid"]
    assert curl(running.socket, "GET", "/v1/units", as_nobody=True, groups=[USERS_GID])[0] == 200
    status, body = curl(running.socket, "POST", "/v1/units/web/stop", as_nobody=True,
                        groups=[USERS_GID])  # fmt: skip
    assert status == 403 and json.loads(body)["code"] == "forbidden"
    status, _ = curl(running.socket, "GET", "/v1/units", as_nobody=True)
    assert status is None  # 0660 root:users: the connect itself is refused
    assert running.unit("web")["pid"] == pid  # nothing was stopped


def test_event_stream_sees_a_restart(running: Daemon) -> None:
    conn = UnixHTTPConnection(str(running.socket), timeout=30)
    conn.request("GET", "/v1/events?unit=web")
    response = conn.getresponse()
    assert response.status == 200
    try:
        assert running.request("POST", "/v1/units/web/restart")[0] == 200
        seen: list[dict[str, Any]] = []
        buf = b""
        deadline = time.monotonic() + 20
        while "started" not in [e["event"] for e in seen]:
            assert time.monotonic() < deadline, seen
            buf += response.read1(4096)
            *lines, buf = buf.split(b"\n")
            seen += [json.loads(line) for line in lines if line.strip()]
        assert all(e["unit"] == "web" for e in seen)
        names = [e["event"] for e in seen]
        assert names.index("stopped") < names.index("started"), names
    finally:
        conn.close()


def test_metrics_of_real_units(running: Daemon) -> None:
    status, text = curl(running.socket, "GET", "/metrics")
    assert status == 200
    assert 'sandboxd_unit_state{state="running",unit="web"} 1.0' in text
    assert 'sandboxd_unit_pids{unit="web"}' in text
    assert 'sandboxd_unit_cpu_seconds_total{unit="web"}' in text
    assert 'sandboxd_unit_memory_bytes{unit="web"}' in text
    # The start-up reconcile and one reload, timed by the daemon itself.
    assert "sandboxd_reconcile_duration_seconds_count 1.0" in text
    assert curl(running.socket, "POST", "/v1/reload")[0] == 200
    _, text = curl(running.socket, "GET", "/metrics")
    assert "sandboxd_reconcile_duration_seconds_count 2.0" in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (prometheus)")
def test_metrics_pass_promtool_with_io_peak_pressure_and_histograms(running: Daemon) -> None:
    running.write_unit("crasher", CRASHER)
    assert curl(running.socket, "POST", "/v1/reload")[0] == 200
    restarted = 'sandboxd_unit_restart_duration_seconds_bucket{le="+Inf"} 0.0'

    def after_a_restart() -> bool:
        text = curl(running.socket, "GET", "/metrics")[1]
        return "sandboxd_unit_restart_duration_seconds_count" in text and restarted not in text

    wait_for(after_a_restart, 60, lambda: "no restart timed")
    _, text = curl(running.socket, "GET", "/metrics")
    assert 'sandboxd_unit_memory_peak_bytes{unit="web"}' in text
    assert 'sandboxd_unit_io_read_bytes_total{unit="web"}' in text
    assert "sandboxd_unit_start_duration_seconds_count" in text
    pressure = 'sandboxd_unit_pressure_ratio{kind="some",resource="memory",unit="web",window="10s"}'
    assert (pressure in text) == (cgroup_version() == 2)  # v1: no sample, never a zero
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def _raw(sock: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(sock))
        try:
            s.sendall(data)
            return s.recv(4096)
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            return b""


@pytest.mark.slow
def test_abuse_while_supervising(running: Daemon) -> None:
    running.write_unit("crasher", CRASHER)
    assert running.request("POST", "/v1/reload")[0] == 200
    running.wait_unit("crasher", lambda u: u["restarts"] >= 1)
    before = running.status()["crasher"]["restarts"]
    web_pid = running.unit("web")["pid"]
    stop = threading.Event()
    slow: list[socket.socket] = []

    def hostile() -> None:
        garbage = [
            b"HELLO\r\n\r\n",
            b"GET / HTTP/9\r\n\r\n",
            b"\x00" * 5000 + b"\r\n\r\n",
            b"POST /v1/reload HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n{",
            b"POST /v1/units/web/stop HTTP/1.1\r\nContent-Length: 5\r\n\r\n{{{{{",
        ]
        while not stop.is_set():
            for g in garbage:
                _raw(running.socket, g)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(running.socket))
            s.sendall(b"GET /v1/units HTTP/1.1\r\nHost: x\r\n")  # never finished
            slow.append(s)

    attacker = threading.Thread(target=hostile)
    attacker.start()
    try:
        with ThreadPoolExecutor(max_workers=200) as pool:
            codes = list(pool.map(lambda _: running.request("GET", "/v1/units")[0], range(200)))
        assert codes == [200] * 200
        time.sleep(1.0)
        # the bad bodies were refused, never acted on
        assert running.unit("web")["pid"] == web_pid
    finally:
        stop.set()
        attacker.join()
        for s in slow:
            s.close()
    wait_for(lambda: running.status()["crasher"]["restarts"] >= before + 3, 30)
    assert running.status()["web"]["state"] == "running"


@pytest.mark.slow
def test_fuzz_reads_of_a_real_daemon(running: Daemon) -> None:
    """Schemathesis on the daemon's own served document (read operations: the fake-controller
    fuzz in tests/unit/api covers the actions); the daemon answers every case as documented."""

    status, body = running.request("GET", "/v1/openapi.json")
    assert status == 200
    schema = (
        schemathesis.openapi.from_dict(body).include(method="GET").exclude(operation_id=["events"])
    )

    class Connection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(str(running.socket))
            return s

    class Pool(HTTPConnectionPool):
        ConnectionCls = Connection

    class Adapter(HTTPAdapter):
        def get_connection_with_tls_context(self, *args: Any, **kwargs: Any) -> Any:
            return Pool("localhost")

    session = requests.Session()
    session.mount("http://", Adapter())
    checked = 0
    for result in schema.get_all_operations():
        op = result.ok()  # type: ignore[union-attr]  # an Err would raise here: test fails

        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def check(case: Any) -> None:
            if case.query and "follow" in case.query:
                case.query["follow"] = 0
            response = case.call(base_url="http://localhost", session=session, timeout=10)
            case.validate_response(response)

        check()
        checked += 1
    assert checked >= 5
    assert running.status()["web"]["state"] == "running"
