"""Listening sockets the daemon owns for socket activation, and taking them back from a
running service after a daemon restart (pidfd_getfd(2))."""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import socket
import stat

SYS_PIDFD_GETFD = 438  # the same number on every architecture (the unified table)
BACKLOG = 4096  # the kernel caps it at net.core.somaxconn


class ListenError(Exception):
    pass


def _inet(kind: str, host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if kind == "tcp":
            sock.listen(BACKLOG)
    except OSError as err:
        sock.close()
        raise ListenError(f"{kind} {host}:{port}: {err.strerror}") from None
    return sock


def _unix(path: str, mode: int, owner: str | None, group: str | None) -> socket.socket:
    try:
        uid = pwd.getpwnam(owner).pw_uid if owner is not None else -1
        gid = grp.getgrnam(group).gr_gid if group is not None else -1
    except KeyError as err:
        raise ListenError(f"unix {path}: no such user or group {err}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # A socket file left by an earlier bind (a daemon killed with the unit's socket open)
        # is replaced; anything else at the path is not ours to remove.
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass
        sock.bind(path)
        os.chown(path, uid, gid, follow_symlinks=False)
        os.chmod(path, mode)
        sock.listen(BACKLOG)
    except OSError as err:
        sock.close()
        raise ListenError(f"unix {path}: {err.strerror}") from None
    return sock


def bind(
    kind: str,
    address: tuple[str, int] | str,
    mode: int = 0o660,
    owner: str | None = None,
    group: str | None = None,
) -> int:
    """A bound (and, for streams, listening) socket's fd, blocking and close-on-exec: it is
    shared with the service, which expects a blocking socket as systemd gives it."""
    if kind == "unix":
        assert isinstance(address, str)
        sock = _unix(address, mode, owner, group)
    else:
        assert isinstance(address, tuple)
        sock = _inet(kind, *address)
    return sock.detach()


_libc = ctypes.CDLL(None, use_errno=True)


def take_from(pidfd: int, fd: int) -> int:
    """A duplicate (close-on-exec) of the process's fd `fd`; OSError if it has none."""
    got = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    if got < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(got)


def inode(fd: int) -> int:
    return os.fstat(fd).st_ino
