"""Hostile and clumsy clients: each gets an error or an answer, and the server keeps serving."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from api_helpers import call_json, raw_exchange

from supervisor.api.testing import FakeController, ServerThread
from tests.support.waiting import wait_for


def still_serving(path: Path) -> bool:
    return call_json(path, "GET", "/v1/units")[0] == 200


def test_malformed_http_gets_400(server: ServerThread) -> None:
    for garbage in (
        b"HELLO\r\n\r\n",
        b"GET /v1/units HTTP/9.9\r\n\r\n",
        b"GET /v1/units HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n",
        b"\x00\x01\x02\xff" * 100 + b"\r\n\r\n",
        b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ):
        answer = raw_exchange(server.path, garbage)
        assert answer[:12] in (b"HTTP/1.1 400", b"HTTP/1.0 400"), (garbage, answer[:200])
    assert still_serving(server.path)


def test_oversized_request_line_and_headers(server: ServerThread) -> None:
    answer = raw_exchange(server.path, b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n")
    assert answer.split(b" ")[1] in (b"400", b"414", b"431")
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(1000))
    answer = raw_exchange(server.path, b"GET /v1/units HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert answer.split(b" ")[1] in (b"400", b"431")
    assert still_serving(server.path)


def test_huge_chunked_body_is_cut_off(server: ServerThread, controller: FakeController) -> None:
    chunk = b"%x\r\n%s\r\n" % (1 << 16, b" " * (1 << 16))
    request = b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(server.path))
        sock.sendall(request)
        try:
            for _ in range(64):  # 4 MiB: far beyond client_max_size
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may hang up once it has answered
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert controller.calls == []
    assert still_serving(server.path)


def test_slow_and_vanishing_clients(server: ServerThread) -> None:
    slow = []
    for _ in range(20):  # slowloris: half a request each, held open
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(server.path))
        sock.sendall(b"GET /v1/units HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        slow.append(sock)
    for _ in range(20):  # vanishing: half a body, then gone
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(server.path))
            sock.sendall(b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    for _ in range(20):  # gone before reading the answer
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(server.path))
            sock.sendall(b"GET /v1/units HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        assert still_serving(server.path)
    finally:
        for sock in slow:
            sock.close()
    assert still_serving(server.path)


def test_stream_reader_that_never_reads(server: ServerThread, controller: FakeController) -> None:
    (controller.log_dir / "web.log").write_bytes(b"x" * 1000 + b"\n" * (8 << 20))
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(str(server.path))
    stuck.sendall(b"GET /v1/units/web/logs?follow=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        assert still_serving(server.path)  # the stuck writer waits alone
    finally:
        stuck.close()
    assert still_serving(server.path)


def test_vanished_action_client_does_not_cancel_the_action(
    server: ServerThread, controller: FakeController
) -> None:
    controller.action_delay = 0.3
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(server.path))
        sock.sendall(b"POST /v1/units/web/stop HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        wait_for(lambda: controller.calls == [("stop", "web")])
    wait_for(lambda: controller.units["web"].state == "stopped")


def test_200_concurrent_clients(server: ServerThread) -> None:
    barrier = threading.Barrier(200, timeout=30)

    def client(i: int) -> int:
        barrier.wait()
        url = "/v1/units" if i % 2 else "/v1/units/web"
        return call_json(server.path, "GET", url)[0]

    with ThreadPoolExecutor(max_workers=200) as pool:
        statuses = list(pool.map(client, range(200)))
    assert statuses == [200] * 200
    assert still_serving(server.path)
