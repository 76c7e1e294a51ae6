"""The least HTTP/1.1 sandboxctl needs: one request per connection over a Unix socket.

Not http.client: importing it pulls in the email package and ssl, ~35 ms, which was most of a
`sandboxctl status` (issue 23). The daemon is the only peer, so this reads what it sends (a
Content-Length body, a chunked stream, or a body up to EOF) and nothing more: no keep-alive,
no redirects, no TLS, no compression. The socket is `_socket`'s, the C type under the
`socket` module: socket.py adds nothing a client of one Unix socket uses, and its import (the
enum conversions of every AF_/SOCK_ constant, selectors, array) was 2 to 3 ms of each call.
"""

from __future__ import annotations

import _socket
import time

CONNECT_RETRY = 5.0
RECV = 256 * 1024


class ProtocolError(Exception):
    """The peer's answer is not HTTP this module reads, or it ended early."""


class Closed(ProtocolError):
    """The connection ended before the answer did."""


def connect(path: str, timeout: float | None) -> _socket.socket:
    # A Unix socket answers EAGAIN, not a wait, when its accept backlog is full: retry briefly,
    # as a TCP client's SYN would be retried, before calling the daemon unreachable.
    deadline = time.monotonic() + CONNECT_RETRY
    while True:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except BlockingIOError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
            continue
        except BaseException:
            sock.close()
            raise
        return sock


def request(
    sock: _socket.socket, method: str, url: str, headers: dict[str, str], body: bytes | None
) -> Response:
    """Send one request (the connection closes after its answer) and read the answer's head."""
    lines = [f"{method} {url} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{key}: {value}" for key, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
    return Response(sock)


class Response:
    """An answer: `status`, `reason`, `headers` (names lower case), then its body by `read()`
    (all of it) or `read1()` (what has arrived, for streams)."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self._buffer = b""
        self._eof = False
        head = self._head()
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP answer: {status_line[:80]!r}")
        self.status = int(parts[1])
        self.reason = parts[2] if len(parts) > 2 else ""
        self.headers: dict[str, str] = {}
        for line in header_lines:
            key, sep, value = line.partition(":")
            if sep:
                self.headers[key.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        # Bytes left of the body (Content-Length) or of the current chunk; None: up to EOF.
        self._left: int | None = int(length) if length is not None and not self._chunked else None
        self._chunk_crlf = False  # a chunk's trailing CRLF is still to be read
        self._done = self._left == 0 or status_has_no_body(self.status)

    def settimeout(self, seconds: float | None) -> None:
        self.sock.settimeout(seconds)

    def close(self) -> None:
        self.sock.close()

    def read(self) -> bytes:
        parts = []
        while chunk := self.read1(RECV):
            parts.append(chunk)
        return b"".join(parts)

    def read1(self, limit: int) -> bytes:
        """The next bytes of the body, at most `limit`, waiting for at most one arrival; b""
        at its end. A stream's chunk is returned as soon as it is here."""
        if self._done:
            return b""
        if not self._chunked:
            want = limit if self._left is None else min(limit, self._left)
            data = self._take(want)
            if not data:
                if self._left is not None:
                    raise Closed(f"the answer ended {self._left} bytes short")
                self._done = True
                return b""
            if self._left is not None:
                self._left -= len(data)
                self._done = self._left == 0
            return data
        if not self._left:
            if self._chunk_crlf:
                self._line()
                self._chunk_crlf = False
            size_text = self._line().split(b";", 1)[0].strip()
            try:
                self._left = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size: {size_text[:20]!r}") from None
            if self._left == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                self._done = True
                return b""
        data = self._take(min(limit, self._left))
        if not data:
            raise Closed("the answer ended inside a chunk")
        self._left -= len(data)
        self._chunk_crlf = self._left == 0
        return data

    def _recv(self) -> bool:
        if self._eof:
            return False
        data = self.sock.recv(RECV)
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    def _take(self, limit: int) -> bytes:
        """Up to `limit` bytes: what is buffered, else one receive; b"" at EOF."""
        if not self._buffer and not self._recv():
            return b""
        data, self._buffer = self._buffer[:limit], self._buffer[limit:]
        return data

    def _line(self) -> bytes:
        """One CRLF-ended line without its end (a chunk size, a trailer)."""
        while (end := self._buffer.find(b"\r\n")) < 0:
            if not self._recv():
                raise Closed("the answer ended inside a line")
        line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
        return line

    def _head(self) -> bytes:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if not self._recv():
                raise Closed("the daemon closed the connection before answering")
        head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
        return head


def status_has_no_body(status: int) -> bool:
    """1xx, 204 and 304 answers carry no body whatever their headers say (RFC 9112 6.3)."""
    return status < 200 or status in (204, 304)
