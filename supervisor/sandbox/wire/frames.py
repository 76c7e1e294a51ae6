"""Frames on the fork server's Unix stream sockets (protocol.py, second table).

A frame is a 4-byte big-endian header length, a 4-byte body length, the header, the body; fds
ride on its first byte (SCM_RIGHTS). A stream socket rather than SOCK_SEQPACKET because a body
(a plan with its /etc copies, ~150 KB) can exceed a datagram's size limit.
"""

from __future__ import annotations

import array
import math
import os
import select
import socket
import struct
from collections.abc import Sequence

from supervisor.sandbox.wire.protocol import MAX_KEEP_FDS, ProtocolError

_FRAME = struct.Struct(">II")  # header length, body length
_MAX_FDS = 4 + MAX_KEEP_FDS  # a request: sync_w, go_r, stdout, stderr and the kept fds


def wait_readable(fd: int | socket.socket, timeout: float | None = None) -> bool:
    """Block until `fd` is readable (or hung up); False if `timeout` seconds passed first.

    poll(2), never select(2): select cannot take an fd at or above FD_SETSIZE (1024) and raises
    ValueError, and the daemon holds a few fds per sandbox, so past ~250 sandboxes every fd it
    creates is above that line.
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
    return bool(poller.poll(ms))  # EINTR is retried by Python (PEP 475)


def send_frame(
    sock: socket.socket, header: bytes, body: bytes = b"", fds: Sequence[int] = ()
) -> None:
    data = b"".join((_FRAME.pack(len(header), len(body)), header, body))
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    # MSG_NOSIGNAL: a dead peer is an EPIPE to handle, not a SIGPIPE.
    sent = sock.sendmsg([data], ancillary, socket.MSG_NOSIGNAL)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:], socket.MSG_NOSIGNAL)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ProtocolError(f"{size} bytes", f"EOF after {got}")
        got += n
    return bytes(buf)


def recv_frame(sock: socket.socket) -> tuple[bytes, bytes, list[int]] | None:
    """(header, body, fds) of the next frame, or None at EOF. Received fds are close-on-exec
    (they must not leak into anything the receiver execs) and the caller's to close."""
    fds: list[int] = []
    head, ancillary, flags, _ = sock.recvmsg(
        _FRAME.size, socket.CMSG_SPACE(_MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", data[: len(data) - len(data) % 4]))
    try:
        if not head:
            return None
        if flags & socket.MSG_CTRUNC:
            raise ProtocolError(f"at most {_MAX_FDS} fds", "more (truncated)")
        if len(head) < _FRAME.size:
            head += _recv_exact(sock, _FRAME.size - len(head))
        header_len, body_len = _FRAME.unpack(head)
        rest = _recv_exact(sock, header_len + body_len)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return rest[:header_len], rest[header_len:], fds
