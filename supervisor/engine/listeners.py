"""A unit's `[[listen]]` sockets, held by the daemon from before the first start until the
unit is removed or its sockets change: a restarting service finds its clients waiting in the
backlog instead of refused.

The service holds copies as fds 3.. (LISTEN_FDS), so a daemon restart loses nothing: the next
daemon takes them back from the running PID 1 (pidfd_getfd), checked against the socket
inodes the state file recorded, and binds anew only what it cannot find.

A tcp/udp socket of a unit with its own network (mode "none" or "bridge") lives in a network
namespace the daemon holds for the unit (linux/heldnetns.py, a file under
<state_dir>/netns/): made before the first start, joined by every run instead of a fresh
one, kept across a daemon restart (the next daemon finds the file), and dropped when the unit
is removed or its network or inet sockets change (then a new one is made: the veth, address
and routes are built once per namespace, by the launcher's network attach).
"""

from __future__ import annotations

import contextlib
import os

import structlog

from supervisor.errors import LaunchError
from supervisor.linux import heldnetns, listen
from supervisor.unit.listen import Listen, held_netns_key, needs_held_netns, parse_inet
from supervisor.unit.spec import UnitSpec

log = structlog.get_logger("sandboxd.listen")

FIRST_FD = 3  # SD_LISTEN_FDS_START
STAGE = "listen"  # launch-error:listen


def _bind(entry: Listen) -> int:
    if entry.kind == "unix":
        assert entry.unix is not None
        return listen.bind("unix", entry.unix, entry.mode, entry.owner, entry.group)
    return listen.bind(entry.kind, parse_inet(getattr(entry, entry.kind), entry.kind))


def _bind_all(entries: tuple[Listen, ...]) -> list[int]:
    fds: list[int] = []
    try:
        for entry in entries:
            fds.append(_bind(entry))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


class Listeners:
    def __init__(self, unit: str, netns_dir: str | None = None) -> None:
        self.unit = unit
        self._config: tuple[Listen, ...] = ()
        self._fds: list[int] = []
        # Where the unit's held network namespace is (None: this runner never holds one).
        self._netns_path = heldnetns.path_for(netns_dir, unit) if netns_dir else None
        self._netns_key: str | None = None  # what it was made for (held_netns_key)

    def netns_for(self, spec: UnitSpec) -> str | None:
        """The held namespace a start of `spec` joins (after ensure), else None."""
        unit = spec.unit
        if self._netns_path is None or not needs_held_netns(unit.listen, unit.network.mode):
            return None
        return self._netns_path

    def netns_stale(self, spec: UnitSpec) -> bool:
        """A namespace is held that a start of `spec` must not join: gone from its config, or
        made for another network section or other inet sockets. drop_netns() it first."""
        if self._netns_path is None or not heldnetns.is_held(self._netns_path):
            return False
        if self.netns_for(spec) is None:
            return True
        return self._netns_key is not None and self._netns_key != self._key(spec)

    @staticmethod
    def _key(spec: UnitSpec) -> str:
        return held_netns_key(spec.unit.listen, spec.unit.network)

    def resume(self, spec: UnitSpec) -> None:
        """After a daemon restart: a namespace held for the unit was made for `spec` (the one
        its last run was launched with; a reload that changes it makes a new one)."""
        if self._netns_path is not None and heldnetns.is_held(self._netns_path):
            self._netns_key = self._key(spec)

    def drop_netns(self) -> bool:
        """Close the sockets and let the held namespace go (umount, unlink); True if one was
        held. Its veth pair goes with it; the caller removes the host side's rules."""
        self.close()
        # One we made or found may have been unmounted meanwhile (an orphan): its veth and
        # rules are still the caller's to remove.
        had, self._netns_key = self._netns_key is not None, None
        if self._netns_path is None:
            return False
        return heldnetns.drop(self._netns_path) or had

    @property
    def fds(self) -> list[tuple[int, str]]:
        return [(fd, e.fd_name()) for fd, e in zip(self._fds, self._config, strict=True)]

    def ensure(self, spec: UnitSpec) -> list[tuple[int, str]]:
        """The sockets for a start of `spec`: those held if its [[listen]] is unchanged, else
        bound now. LaunchError(stage "listen") naming the socket that cannot be bound."""
        wanted = tuple(spec.unit.listen)
        path = self.netns_for(spec)
        unchanged = wanted == self._config and len(self._fds) == len(wanted)
        if unchanged and (path is None or heldnetns.is_held(path)):
            return self.fds
        self.close()
        try:
            if path is None:
                fds = _bind_all(wanted)
            else:
                heldnetns.create(path)
                self._netns_key = self._key(spec)
                unix = [e for e in wanted if e.kind == "unix"]
                inet = [e for e in wanted if e.kind != "unix"]
                # A unix socket is a file of the host's: bound outside; inet ones inside,
                # with nothing awaited until the daemon is back in its own namespace.
                by_entry = dict(zip(unix, _bind_all(tuple(unix)), strict=True))
                try:
                    with heldnetns.inside(path):
                        by_entry.update(zip(inet, _bind_all(tuple(inet)), strict=True))
                except BaseException:
                    for fd in by_entry.values():
                        os.close(fd)
                    raise
                fds = [by_entry[e] for e in wanted]
        except listen.ListenError as err:
            raise LaunchError(self.unit, STAGE, str(err)) from None
        except OSError as err:  # HeldNetnsError, NamespaceError: both name what failed
            raise LaunchError(self.unit, STAGE, f"network namespace: {err}") from None
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
