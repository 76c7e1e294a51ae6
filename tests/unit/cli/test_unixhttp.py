"""sandboxctl's HTTP reader on the framings the daemon uses, split however the kernel splits."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from supervisor.cli import unixhttp


def _answer(pieces: list[bytes]) -> Iterator[unixhttp.Response]:
    ours, theirs = socket.socketpair()
    ours.settimeout(10)

    def serve() -> None:
        with theirs:
            theirs.recv(65536)  # the request
            for piece in pieces:
                theirs.sendall(piece)

    server = threading.Thread(target=serve)
    server.start()
    try:
        yield unixhttp.request(ours, "GET", "/v1/units", {"Accept": "application/json"}, None)
    finally:
        server.join()
        ours.close()


def _read(pieces: list[bytes]) -> tuple[int, bytes]:
    for response in _answer(pieces):
        return response.status, response.read()
    raise AssertionError("unreachable")


def test_a_content_length_body_split_anywhere() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX: y\r\n\r\nhello world"
    for cut in range(1, len(raw)):
        assert _read([raw[:cut], raw[cut:]]) == (200, b"hello world")


def test_a_chunked_body_split_anywhere() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: t\r\n\r\n"
    )
    for cut in range(1, len(raw)):
        assert _read([raw[:cut], raw[cut:]]) == (200, b"hello world")


def test_a_body_up_to_eof() -> None:
    assert _read([b"HTTP/1.1 404 Not Found\r\n\r\n", b"gone"]) == (404, b"gone")


def test_a_stream_chunk_is_returned_as_it_arrives() -> None:
    for response in _answer([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"]):
        assert response.read1(65536) == b"abc"
        with pytest.raises(unixhttp.Closed):  # the server went away mid-stream
            response.read1(65536)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", unixhttp.Closed),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", unixhttp.Closed),
        (b"SSH-2.0-OpenSSH\r\n\r\n", unixhttp.ProtocolError),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", unixhttp.ProtocolError),
    ],
)
def test_a_broken_answer_is_an_error(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        _read([raw])
