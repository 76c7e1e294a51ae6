"""Service-side sd_notify: one datagram socket per unit, readable from inside its sandbox only.

Interface for the unit runner (no threads: loop.add_reader):

    endpoint = NotifyEndpoint.open(config.state_dir, unit, loop, on_message,
                                   accept_pid=cgroups.member_check(cgroup))
    LaunchRequest(..., extra_env=endpoint.service_env(watchdog_seconds),
                  extra_binds=[ExtraBind(*endpoint.bind)])
    ...                                   # on_message(NotifyMessage) for each accepted datagram
    endpoint.close()                      # when the unit is removed (it may span many runs)

Who may talk: the socket's directory is bound read-only into the sandbox at SANDBOX_DIR, and
its host-side parent is 0700, so only root on the host and processes of that sandbox can reach
it. Each datagram still carries its sender's pid (SCM_CREDENTIALS, filled in by the kernel, so
it cannot be forged without CAP_SYS_ADMIN in our pid namespace) and is dropped unless that
process is in the unit's cgroup: a process that was handed the socket path, or another sandbox
sharing a mount by mistake, cannot make a unit ready. MAINPID= is ignored (the daemon knows
its PID 1); file descriptors sent along (FDSTORE=1, BARRIER=1) are closed at once, which is
what a BARRIER=1 sender waits for.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger("sandboxd.notify")

SANDBOX_DIR = "/run/sandboxd-notify"  # where the unit's notify directory appears inside
SOCKET_NAME = "notify.sock"
SANDBOX_SOCKET = f"{SANDBOX_DIR}/{SOCKET_NAME}"
MAX_DATAGRAM = 8192  # systemd's own limit is 4096 + slack; longer ones are dropped
MAX_FDS = 64
BATCH = 64  # datagrams read per wakeup, so one chatty service cannot starve the loop
_UCRED = struct.Struct("3i")


@dataclass(frozen=True)
class NotifyMessage:
    """One accepted datagram, parsed (sd_notify(3) assignments; unknown ones kept in `fields`)."""

    pid: int
    ready: bool = False
    reloading: bool = False
    stopping: bool = False
    watchdog: bool = False  # WATCHDOG=1: keep-alive
    watchdog_trigger: bool = False  # WATCHDOG=trigger: the service asks to be restarted
    status: str | None = None
    errno: int | None = None
    extend_timeout_usec: int | None = None
    watchdog_usec: int | None = None  # WATCHDOG_USEC=: the service changes its own timeout
    fields: dict[str, str] = field(default_factory=dict)


def _int(value: str) -> int | None:
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number >= 0 else None


def parse(data: bytes, pid: int) -> NotifyMessage | None:
    """Parse `KEY=VALUE` lines; None for a datagram that is not text or has no assignment."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    if not fields:
        return None
    return NotifyMessage(
        pid=pid,
        ready=fields.get("READY") == "1",
        reloading=fields.get("RELOADING") == "1",
        stopping=fields.get("STOPPING") == "1",
        watchdog=fields.get("WATCHDOG") == "1",
        watchdog_trigger=fields.get("WATCHDOG") == "trigger",
        status=fields.get("STATUS"),
        errno=_int(fields["ERRNO"]) if "ERRNO" in fields else None,
        extend_timeout_usec=_int(fields["EXTEND_TIMEOUT_USEC"])
        if "EXTEND_TIMEOUT_USEC" in fields
        else None,
        watchdog_usec=_int(fields["WATCHDOG_USEC"]) if "WATCHDOG_USEC" in fields else None,
        fields={k: v for k, v in fields.items() if k != "MAINPID"},
    )


# --- the socket ---------------------------------------------------------------------------


def _receive(sock: socket.socket) -> tuple[bytes, int | None, int, list[int]] | None:
    """One datagram: (data, sender pid or None, msg flags, fds passed along); None when there
    is nothing left. The caller closes the fds, *after* checking the sender: closing is what
    releases a BARRIER=1 sender, which may then exit and take its /proc entry along."""
    try:
        data, ancdata, flags, _ = sock.recvmsg(
            MAX_DATAGRAM,
            socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(MAX_FDS * 4),
            socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC,
        )
    except (BlockingIOError, InterruptedError):
        return None
    pid, fds = None, array.array("i")
    for level, kind, payload in ancdata:
        if level != socket.SOL_SOCKET:
            continue
        if kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
            pid = _UCRED.unpack(payload[: _UCRED.size])[0]
        elif kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, pid, flags, list(fds)


def _close_all(fds: list[int]) -> None:
    for fd in fds:  # never keep a sandbox's fd
        with contextlib.suppress(OSError):
            os.close(fd)


class NotifyEndpoint:
    def __init__(
        self,
        unit: str,
        directory: Path,
        sock: socket.socket,
        *,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[NotifyMessage], None],
        accept_pid: Callable[[int], bool],
    ) -> None:
        self.unit, self.directory, self._sock, self._loop = unit, directory, sock, loop
        self._on_message, self._accept_pid = on_message, accept_pid
        self.rejected = 0
        loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    def open(
        cls,
        state_dir: Path,
        unit: str,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[NotifyMessage], None],
        accept_pid: Callable[[int], bool],
    ) -> NotifyEndpoint:
        parent = state_dir / "notify"
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(parent, 0o700)  # host users other than root never reach any unit's socket
        directory = parent / unit
        directory.mkdir(mode=0o755, exist_ok=True)
        path = directory / SOCKET_NAME
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.bind(str(path))
            # Any uid inside the sandbox (the service may drop to nobody, or be mapped by a
            # user namespace) must be able to send: the directories above are the gate.
            os.chmod(path, 0o666)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return cls(unit, directory, sock, loop=loop, on_message=on_message, accept_pid=accept_pid)

    @property
    def bind(self) -> tuple[str, str, bool]:
        """(host source, target inside the sandbox, read-only) for the launcher's ExtraBind."""
        return str(self.directory), SANDBOX_DIR, True

    @property
    def host_socket(self) -> Path:
        return self.directory / SOCKET_NAME

    def service_env(self, watchdog: float = 0.0) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": SANDBOX_SOCKET}
        if watchdog > 0:
            env["WATCHDOG_USEC"] = str(int(watchdog * 1_000_000))
        return env

    def _readable(self) -> None:
        for _ in range(BATCH):
            try:
                got = _receive(self._sock)
            except OSError as exc:
                log.warning("notify.receive_failed", unit=self.unit, error=str(exc))
                return
            if got is None:
                return
            data, pid, flags, fds = got
            try:
                self._handle(data, pid, flags)
            finally:
                _close_all(fds)

    def _handle(self, data: bytes, pid: int | None, flags: int) -> None:
        reason = None
        if pid is None:
            reason = "no sender credentials"
        elif flags & socket.MSG_TRUNC:
            reason = f"datagram longer than {MAX_DATAGRAM} bytes"
        elif not self._accept_pid(pid):
            reason = "sender is not in the unit's cgroup"
        message = parse(data, pid or 0) if reason is None else None
        if message is None:
            self.rejected += 1
            log.warning(
                "notify.rejected", unit=self.unit, pid=pid, reason=reason or "not KEY=VALUE text"
            )
            return
        if message.fields.keys() == {"BARRIER"}:
            return  # sd_notify_barrier(): answered by closing its fd, nothing to report
        self._on_message(message)

    def close(self) -> None:
        with contextlib.suppress(ValueError, RuntimeError):  # loop already closed
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(OSError):
            self.host_socket.unlink()
        with contextlib.suppress(OSError):
            self.directory.rmdir()
