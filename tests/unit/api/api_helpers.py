"""Raw HTTP over a Unix socket for tests: what any client would send, no sandboxctl logic."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

from tests.support.daemon_kit import UnixHTTPConnection

MEMBERS_GID = 100  # "users" on Debian; tests connect as nobody with it as an extra group


def call(
    path: Path,
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = UnixHTTPConnection(str(path), timeout=10)
    try:
        conn.request(method, url, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def call_json(path: Path, method: str, url: str, body: bytes | None = None) -> tuple[int, Any]:
    status, _, raw = call(path, method, url, body)
    return status, json.loads(raw)


def raw_exchange(path: Path, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes as they are and read until the server closes or goes quiet."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def stream_open(
    path: Path, url: str
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = UnixHTTPConnection(str(path), timeout=10)
    conn.request("GET", url)
    return conn, conn.getresponse()


def unix_session(path: Path) -> Any:
    """A requests.Session whose every URL goes to the Unix socket at `path` (for schemathesis)."""

    class Connection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(str(path))
            return sock

    class Pool(HTTPConnectionPool):
        ConnectionCls = Connection

    class Adapter(HTTPAdapter):
        def get_connection_with_tls_context(self, *args: Any, **kwargs: Any) -> Any:
            return Pool("localhost")

    session = requests.Session()
    session.mount("http://", Adapter())
    return session
