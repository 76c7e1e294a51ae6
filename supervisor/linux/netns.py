"""Borrowing another process's namespace for one system call, without forking.

A socket belongs to the network namespace it was created in, for its whole life, whoever uses
it later. So the daemon can open a socket *inside* a sandbox's network namespace by switching
into that namespace, calling socket(), and switching straight back, then connect and talk
through it asynchronously from its own event loop like any other socket. The same holds for
`pid_for_children`: a fork() while the daemon is in a sandbox's PID namespace puts the child
in that namespace (sandbox/child/enter.py does this for `sandboxctl exec`).

Safe only because nothing awaits between the two setns() calls (`briefly_in` is a plain,
synchronous context manager), so no other code of the loop runs while it is away, and setns(2)
moves only the calling thread: the daemon's one other thread, the log writer
(engine/logwriter.py), stays in the daemon's namespaces and opens no socket anyway. Switching
back to its own namespace goes through an fd opened once, on first use, never through a path
(which would now resolve inside the sandbox). If the switch back fails, the daemon cannot know
where its next socket would live: it exits at once
(crash-only; services keep running and the next daemon re-adopts them).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator

from supervisor.linux.syscalls import NAMESPACE_FILES, NAMESPACE_FLAGS, REAL, Syscalls

EXIT_LOST_NAMESPACE = 70  # EX_SOFTWARE

_own: dict[str, int] = {}  # namespace kind -> fd of the daemon's own (opened once, CLOEXEC)


class NamespaceError(OSError):
    """The target's namespace could not be entered (it is gone, or the kernel refused)."""


def own_fd(kind: str) -> int:
    """The daemon's own namespace of `kind`, opened once (heldnetns.py returns through it)."""
    return _own_fd(kind)


def return_to_own(own: int, kind: str, sys_: Syscalls = REAL) -> None:
    """setns back to `own` (from own_fd); exits the daemon if the kernel refuses."""
    try:
        sys_.setns(own, NAMESPACE_FLAGS[kind])
    except OSError as exc:  # pragma: no cover - needs a kernel that refuses our own ns
        os.write(2, f"sandboxd: fatal: cannot return to own {kind} namespace: {exc}\n".encode())
        sys.stderr.flush()
        os._exit(EXIT_LOST_NAMESPACE)


def _own_fd(kind: str) -> int:
    fd = _own.get(kind)
    if fd is None:
        path = f"/proc/self/ns/{NAMESPACE_FILES[kind]}"
        fd = _own[kind] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    return fd


def open_ns(pid: int, kind: str) -> int:
    """An fd for `pid`'s namespace of `kind` ("net", "pid", ...); raises NamespaceError."""
    path = f"/proc/{pid}/ns/{NAMESPACE_FILES[kind]}"
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NamespaceError(exc.errno, f"{path}: {exc.strerror}") from None


def same_as_own(ns_fd: int, kind: str) -> bool:
    a, b = os.fstat(ns_fd), os.fstat(_own_fd(kind))
    return (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)


@contextlib.contextmanager
def briefly_in(ns_fd: int, kind: str, sys_: Syscalls = REAL) -> Iterator[None]:
    """Run the body in the namespace `ns_fd` (of `kind`), then return to the daemon's own.

    The body must be synchronous and short (a socket() or a fork())."""
    flag = NAMESPACE_FLAGS[kind]
    own = _own_fd(kind)
    try:
        sys_.setns(ns_fd, flag)
    except OSError as exc:
        raise NamespaceError(exc.errno, f"setns({kind}): {exc.strerror}") from None
    try:
        yield
    finally:
        return_to_own(own, kind, sys_)


def socket_in(pid: int, family: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A non-blocking socket created in `pid`'s network namespace (NamespaceError if gone)."""
    ns_fd = open_ns(pid, "net")
    try:
        flags = kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        if same_as_own(ns_fd, "net"):  # network.mode = "host"
            return socket.socket(family, flags)
        with briefly_in(ns_fd, "net"):
            sock = socket.socket(family, flags)
        return sock
    finally:
        os.close(ns_fd)
