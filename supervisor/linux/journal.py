"""journald's native protocol: one entry per AF_UNIX datagram, on the writer thread.

The protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL, what sd_journal_sendv(3) speaks) is small
and documented: each field is `KEY=value\\n`, or, for a value holding a newline, `KEY\\n`, the
value's length as a 64-bit little-endian integer, the value and `\\n`. An entry too large for
one datagram (EMSGSIZE, ENOBUFS) goes as a sealed memfd passed with SCM_RIGHTS in an empty
datagram. journald takes `_PID`, `_UID`, `_GID` from the datagram's SCM_CREDENTIALS and derives
`_SYSTEMD_UNIT`, `_SYSTEMD_CGROUP`, `_COMM` and the rest from that pid; a sender with
CAP_SYS_ADMIN may name another process there, which is how a service's lines carry its own
`_PID` although the daemon writes them. The kernel refuses a pid that is gone (ESRCH): the
entry then goes with the daemon's own credentials.

Why not a library: systemd-python (`systemd.journal.send`) builds against libsystemd's headers
with a compiler, a build dependency for the package and the offline install, and cannot pass
another process's credentials. What this module does is the documented wire format and three
syscalls.

Every send is non-blocking (MSG_DONTWAIT): a journald that is stalled (its queue full, EAGAIN)
or absent (ENOENT, ECONNREFUSED) fails the send at once, and the caller counts the entry as
dropped. Nothing here blocks the thread that calls it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import struct
from collections.abc import Iterable

SOCKET_PATH = "/run/systemd/journal/socket"
# Only for tests: a daemon that writes its journal entries to another socket (a test's fake
# journal); never set in production, where journald's own socket is the only one.
SOCKET_ENV = "SANDBOXD_JOURNAL_SOCKET"

PRIORITY_STDOUT = 6  # info, as journald gives a service's stdout (SyslogLevel=info)
PRIORITY_STDERR = 3  # err: what the service wrote to stderr

_FIELD = re.compile(rb"[A-Z0-9][A-Z0-9_]{0,63}")
_TOO_BIG = (errno.EMSGSIZE, errno.ENOBUFS)
# F_ADD_SEALS and the seals (<linux/fcntl.h>); Python 3.11's fcntl has them, named here so the
# intent reads: journald refuses a memfd that could still change after it was sent.
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def socket_path() -> str:
    """journald's socket, or the test's (SANDBOXD_JOURNAL_SOCKET)."""
    return os.environ.get(SOCKET_ENV) or SOCKET_PATH


def available() -> bool:
    """Whether this host has a journal to write to: the daemon runs under systemd
    ($JOURNAL_STREAM) or journald's socket exists."""
    return bool(os.environ.get("JOURNAL_STREAM")) or os.path.exists(SOCKET_PATH)


def own_unit(cgroup_file: str = "/proc/self/cgroup") -> str | None:
    """The systemd unit this process runs in (`sandboxd.service`), as journald derives
    `_SYSTEMD_UNIT` from a cgroup path: the first component after the slices; None outside
    a unit (no systemd, or a cgroup v1 host without the unified line)."""
    try:
        with open(cgroup_file) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    path = next((line[3:] for line in lines if line.startswith("0::")), "")
    for part in path.split("/"):
        if part.endswith(".slice") or not part:
            continue
        return part if part.endswith((".service", ".scope")) else None
    return None


def encode(fields: Iterable[tuple[str, bytes]]) -> bytes:
    """One entry in the native format. ValueError for a field name journald would refuse
    (upper-case letters, digits and `_`, not starting with `_`, at most 64 characters)."""
    out = bytearray()
    for key, value in fields:
        name = key.encode()
        if not _FIELD.fullmatch(name):
            raise ValueError(f"not a journal field name: {key!r}")
        if b"\n" in value:
            out += name + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"
        else:
            out += name + b"=" + value + b"\n"
    return bytes(out)


def credentials(pid: int) -> tuple[int, int, int]:
    """SCM_CREDENTIALS naming `pid` as the sender, with the daemon's own uid and gid."""
    return pid, os.getuid(), os.getgid()


class JournalSocket:
    """The daemon's socket to journald (one for every unit). Not thread-safe: one thread (the
    log writer) sends."""

    def __init__(self, path: str | None = None, daemon_unit: str | None = None) -> None:
        self.path = path or socket_path()
        self.daemon_unit = daemon_unit  # the daemon's own systemd unit (own_unit()), if any
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def send(self, entry: bytes, pid: int | None = None) -> None:
        """Send one encoded entry, as process `pid` if given (falling back to the daemon's own
        credentials when the kernel refuses that pid). Raises OSError when journald does not
        take it (ENOENT, ECONNREFUSED, EAGAIN, ...): the caller counts it as dropped."""
        if pid is not None and pid != os.getpid():
            try:
                self._send(entry, credentials(pid))
                return
            except OSError as exc:
                # ESRCH: the pid is gone (a service that wrote its last line and exited);
                # EPERM: no CAP_SYS_ADMIN (a daemon not run as root). The line still counts.
                if exc.errno not in (errno.ESRCH, errno.EPERM):
                    raise
        self._send(entry, None)

    def close(self) -> None:
        self._sock.close()

    def _send(self, entry: bytes, creds: tuple[int, int, int] | None) -> None:
        ancillary = []
        if creds is not None:
            ancillary.append(
                (socket.SOL_SOCKET, socket.SCM_CREDENTIALS, struct.pack("iII", *creds))
            )
        try:
            self._sock.sendmsg([entry], ancillary, socket.MSG_DONTWAIT, self.path)
        except OSError as exc:
            if exc.errno not in _TOO_BIG:
                raise
        else:
            return
        memfd = _sealed_memfd(entry)
        try:
            rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", memfd))
            self._sock.sendmsg([], [*ancillary, rights], socket.MSG_DONTWAIT, self.path)
        finally:
            os.close(memfd)


def _sealed_memfd(data: bytes) -> int:
    fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd
