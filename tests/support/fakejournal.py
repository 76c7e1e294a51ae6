"""A fake journald for tests: a bound AF_UNIX datagram socket read as journald reads it (the
datagram, or the sealed memfd it carries, and the sender's credentials). Speaking the
documented native protocol to it is the protocol, not the kernel; journald itself is checked
in the systemd VM (tests/systemd/test_journal_output.py)."""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
from pathlib import Path

_CREDS = struct.calcsize("iII")


def parse(data: bytes) -> list[tuple[str, bytes]]:
    """The fields of one entry, as journald's server_process_native_message parses them."""
    fields, pos = [], 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        line = data[pos:end]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            pos = end + 1
        else:
            key, (size,) = line, struct.unpack("<Q", data[end + 1 : end + 9])
            value = data[end + 9 : end + 9 + size]
            assert data[end + 9 + size : end + 10 + size] == b"\n"
            pos = end + 10 + size
        fields.append((key.decode(), value))
    return fields


class FakeJournal:
    def __init__(self, path: Path, timeout: float = 10) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(timeout)

    def receive(self) -> tuple[list[tuple[str, bytes]], int]:
        """(fields, sender pid) of the next entry."""
        data, ancdata, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(_CREDS) + 64)
        pid, fds = -1, array.array("i")
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:_CREDS])[0]
            elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        for fd in fds:
            assert not data
            assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE, (
                "journald wants it sealed"
            )
            try:  # from offset 0, as journald maps it (the sender's writes moved the offset)
                data = os.pread(fd, os.fstat(fd).st_size, 0)
            finally:
                os.close(fd)
        return parse(data), pid

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)
