"""Who is on the other end of the control socket, and what they may do.

The socket's mode (0660, group = the configured group) is the first gate; this is the second,
for a socket whose mode was widened by mistake or a group that holds more people than it should.
Credentials come from the kernel (SO_PEERCRED, SO_PEERGROUPS) at connect time, so a client can
neither lie about them nor change them after connecting: root (and the daemon's own uid) may do
everything, members of the group may read (GET/HEAD), everyone else gets 403.
"""

from __future__ import annotations

import errno
import grp
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

_PEERCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13
READ_METHODS = frozenset({"GET", "HEAD"})
log = structlog.get_logger("sandboxd.api")


class Access(Enum):
    NONE = "none"
    READ = "read"
    FULL = "full"


@dataclass(frozen=True)
class PeerCred:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups at connect time


class SockoptSocket(Protocol):
    """A socket.socket or asyncio's TransportSocket wrapper around one."""

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


def peer_credentials(sock: SockoptSocket) -> PeerCred:
    """The connecting process's pid, uid, gid and supplementary groups, as the kernel saw them."""
    pid, uid, gid = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    return PeerCred(pid, uid, gid, _peer_groups(sock))


def _peer_groups(sock: SockoptSocket) -> tuple[int, ...]:
    size = 64 * 4
    while size <= 65536 * 4:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                size *= 4
                continue
            if exc.errno in (errno.ENOPROTOOPT, errno.EINVAL):
                return ()  # kernel too old: only the primary gid counts
            raise
        return struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
    return ()


def resolve_group(name: str) -> int | None:
    """The gid of the configured group, or None when the host has no such group."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


@dataclass(frozen=True)
class Policy:
    group_gid: int | None
    owner_uid: int = 0  # the daemon's own uid also has full access (tests, rootless runs)

    @classmethod
    def for_group(cls, name: str) -> Policy:
        return cls(group_gid=resolve_group(name), owner_uid=os.geteuid())

    def access(self, cred: PeerCred) -> Access:
        if cred.uid in (0, self.owner_uid):
            return Access.FULL
        if self.group_gid is not None and (
            cred.gid == self.group_gid or self.group_gid in cred.groups
        ):
            return Access.READ
        return Access.NONE

    def allows(self, cred: PeerCred, method: str) -> bool:
        level = self.access(cred)
        return level is Access.FULL or (level is Access.READ and method in READ_METHODS)


PEER_KEY = web.RequestKey("peer", PeerCred)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middleware(policy: Policy) -> Middleware:
    @web.middleware
    async def check_peer(request: web.Request, handler: Handler) -> web.StreamResponse:
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is None:
            raise web.HTTPForbidden(reason="peer credentials unavailable")
        try:
            cred = peer_credentials(sock)
        except OSError as exc:
            why = f"peer credentials unavailable: {exc.strerror}"
            raise web.HTTPForbidden(reason=why) from None
        if not policy.allows(cred, request.method):
            level = policy.access(cred)
            why = "read-only access" if level is Access.READ else "access denied"
            # The audit trail of refused calls: who (kernel-given ids) tried what.
            log.warning(
                "api.refused", uid=cred.uid, gid=cred.gid, pid=cred.pid,
                method=request.method, path=request.path, why=why,
            )  # fmt: skip
            raise web.HTTPForbidden(reason=f"{why} for uid {cred.uid}")
        request[PEER_KEY] = cred
        return await handler(request)

    return check_peer
