"""A unit's `[[listen]]` sockets, held by the daemon from before the first start until the
unit is removed or its sockets change: a restarting service finds its clients waiting in the
backlog instead of refused.

The service holds copies as fds 3.. (LISTEN_FDS), so a daemon restart loses nothing: the next
daemon takes them back from the running PID 1 (pidfd_getfd), checked against the socket
inodes the state file recorded, and binds anew only what it cannot find.
"""

from __future__ import annotations

import contextlib
import os

import structlog

from supervisor.errors import LaunchError
from supervisor.linux import listen
from supervisor.unit.listen import Listen, parse_inet
from supervisor.unit.spec import UnitSpec

log = structlog.get_logger("sandboxd.listen")

FIRST_FD = 3  # SD_LISTEN_FDS_START
STAGE = "listen"  # launch-error:listen


def _bind(entry: Listen) -> int:
    if entry.kind == "unix":
        assert entry.unix is not None
        return listen.bind("unix", entry.unix, entry.mode, entry.owner, entry.group)
    return listen.bind(entry.kind, parse_inet(getattr(entry, entry.kind), entry.kind))


class Listeners:
    def __init__(self, unit: str) -> None:
        self.unit = unit
        self._config: tuple[Listen, ...] = ()
        self._fds: list[int] = []

    @property
    def fds(self) -> list[tuple[int, str]]:
        return [(fd, e.fd_name()) for fd, e in zip(self._fds, self._config, strict=True)]

    def ensure(self, spec: UnitSpec) -> list[tuple[int, str]]:
        """The sockets for a start of `spec`: those held if its [[listen]] is unchanged, else
        bound now. LaunchError(stage "listen") naming the socket that cannot be bound."""
        wanted = tuple(spec.unit.listen)
        if wanted == self._config and len(self._fds) == len(wanted):
            return self.fds
        self.close()
        fds: list[int] = []
        try:
            for entry in wanted:
                fds.append(_bind(entry))
        except listen.ListenError as err:
            for fd in fds:
                os.close(fd)
            raise LaunchError(self.unit, STAGE, str(err)) from None
        self._config, self._fds = wanted, fds
        return self.fds

    def record(self) -> list[list[int]]:
        """[fd in PID 1, socket inode] per socket, for the state file."""
        return [[FIRST_FD + i, listen.inode(fd)] for i, fd in enumerate(self._fds)]

    def adopt(self, spec: UnitSpec, pidfd: int, recorded: list[list[int]]) -> None:
        """Take the sockets back from a re-adopted PID 1; any not found are bound at the next
        start (ensure)."""
        wanted = tuple(spec.unit.listen)
        fds: list[int] = []
        for fd_in_pid1, ino in recorded[: len(wanted)]:
            try:
                fd = listen.take_from(pidfd, fd_in_pid1)
            except OSError as err:
                log.warning("unit.listen_lost", unit=self.unit, fd=fd_in_pid1, error=err.strerror)
                break
            if listen.inode(fd) != ino:
                os.close(fd)
                log.warning("unit.listen_lost", unit=self.unit, fd=fd_in_pid1,
                            error="another file at that fd")  # fmt: skip
                break
            fds.append(fd)
        if len(fds) == len(wanted):
            self.close()
            self._config, self._fds = wanted, fds
        else:
            for fd in fds:
                os.close(fd)

    def close(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._config, self._fds = (), []
