"""A fork server: a small helper process that forks sandbox launchers on the daemon's behalf.

Why: fork, exit and exec cost grows with the forking process's address space (page tables are
copied at fork and torn down at exit). The daemon carries aiohttp, pyroute2, pydantic and
structlog (~60 MB); a fresh interpreter that imports only the launcher's modules is ~15 MB, so
the launcher it forks is cheaper to create and to tear down. It is also single-threaded by
construction, which STYLE rule 6 otherwise has to check in the daemon on every launch.

    server = ForkServer.start()      # once, by the daemon (spawned, not forked: starts small)
    set_fork_server(server)          # launch() now goes through it (supervisor.sandbox.launch)
    ...
    server.close()                   # at shutdown

The launch protocol is unchanged: the daemon still creates the sync and go pipes and sends
them, with the service's stdout/stderr, alongside the plan (protocol.py, the second table). The
server forks the launcher exactly as the daemon would; the launcher's PID 1 re-parents to the
daemon (a child subreaper; the server is not one), so the daemon still owns, watches and reaps
every sandbox. The server only reaps its own launchers.

Lifetime: the server dies with the daemon (PR_SET_PDEATHSIG, checked against a daemon that died
before it was armed, and EOF on its socket). If the server dies, the daemon notices before the
next request and starts a new one; a launch the death interrupted fails with stage
"forkserver", as does any error of the server itself.
"""

from __future__ import annotations

import array
import contextlib
import gc
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from supervisor.errors import LaunchError, SupervisorError
from supervisor.linux.syscalls import PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, REAL, Syscalls
from supervisor.sandbox.plancodec import decode_plan, encode_plan
from supervisor.sandbox.protocol import (
    Forked,
    ForkRequest,
    Hello,
    ProtocolError,
    ServerError,
    decode_server,
    encode_server,
)
from supervisor.sandbox.stage import ChildFds, ChildPlan, run_launcher

if TYPE_CHECKING:
    import subprocess

START_TIMEOUT = 10.0
_FRAME = struct.Struct(">II")  # header length, body length
_MAX_FDS = 8
_REQUEST_FDS = 4  # sync_w, go_r, stdout, stderr


class ForkServerError(SupervisorError):
    """The fork server cannot be started (or restarted)."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(f"fork server: {message}")


# -- framing (both sides) ----------------------------------------------------------------------


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


# -- daemon side -------------------------------------------------------------------------------


class ServerLauncher:
    """A launcher forked by the server, seen from the daemon through a pidfd."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid, self._pidfd = pid, pidfd

    def kill(self) -> None:
        if self._pidfd >= 0:  # a pidfd cannot hit a recycled PID
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def reap(self) -> None:
        """The server reaps it; we only let go of our handle."""
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


class ForkServer:
    """The daemon's handle on its fork server: start, fork launchers, restart, close."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self._proc, self._sock = proc, sock
        self.restarts = 0
        self.last_exit: int | None = None  # wait status of the last server that died

    @classmethod
    def start(cls, timeout: float = START_TIMEOUT) -> ForkServer:
        """Spawn the server (a fresh interpreter) and wait for its Hello; ForkServerError if not."""
        return cls(*_spawn(timeout))

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    def _restart(self) -> None:
        self.last_exit = self._proc.wait()
        self._sock.close()
        self._proc, self._sock = _spawn(START_TIMEOUT)
        self.restarts += 1

    def ensure(self) -> None:
        """Restart the server if it died (ForkServerError if it cannot be restarted)."""
        if not self.alive():
            self._restart()

    def fork(
        self, unit: str, plan: ChildPlan, fds: ChildFds, deadline: float
    ) -> ServerLauncher | None:
        """Have the server fork a launcher for `plan`; None if the server died during the
        request (the launcher may exist: the sync pipe tells). Raises LaunchError."""
        try:
            self.ensure()
        except ForkServerError as err:
            raise LaunchError(unit, "forkserver", err.message) from None
        header = encode_server(ForkRequest(_REQUEST_FDS))
        passed = [fds.sync_w, fds.go_r, plan.stdout_fd, plan.stderr_fd]
        body = encode_plan(plan)
        try:
            send_frame(self._sock, header, body, passed)
        except (BrokenPipeError, ConnectionResetError):
            # It died after ensure() and before reading: nothing was forked, so one retry is safe.
            try:
                self._restart()
                send_frame(self._sock, header, body, passed)
            except (ForkServerError, OSError) as err:
                raise LaunchError(
                    unit, "forkserver", f"cannot reach the fork server: {err}"
                ) from None
        return self._reply(unit, deadline)

    def _reply(self, unit: str, deadline: float) -> ServerLauncher | None:
        if not select.select([self._sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
            # A late reply would be read as the next request's: this server is done for.
            self._proc.kill()
            raise LaunchError(unit, "forkserver", "the fork server did not answer in time")
        try:
            try:
                frame = recv_frame(self._sock)
            except ConnectionResetError:  # it died with our request unread
                frame = None
            if frame is None:
                return None
            header, _, fds = frame
            msg = decode_server(header, (Forked, ServerError))
        except (ProtocolError, OSError) as err:
            self._proc.kill()
            raise LaunchError(unit, "forkserver", str(err)) from None
        if isinstance(msg, ServerError):
            for fd in fds:
                os.close(fd)
            raise LaunchError(unit, "forkserver", msg.message, msg.errno)
        assert isinstance(msg, Forked)
        for fd in fds[1:]:
            os.close(fd)
        return ServerLauncher(msg.pid, fds[0] if fds else -1)

    def died(self) -> str:
        """Why a request got no answer, for its LaunchError (the next request restarts it)."""
        try:
            status: int | str = self._proc.wait(1.0)
        except Exception:
            status = "unknown"
        return f"the fork server died during the launch (wait status {status})"

    def close(self, timeout: float = 5.0) -> None:
        """EOF on its socket makes the server exit; SIGKILL if it does not within `timeout`."""
        self._sock.close()
        try:
            self._proc.wait(timeout)
        except Exception:
            self._proc.kill()
            self._proc.wait()


def _spawn(timeout: float) -> tuple[subprocess.Popen[bytes], socket.socket]:
    import subprocess  # noqa: PLC0415  (daemon side only: the server never needs it)

    import supervisor  # noqa: PLC0415

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    root = os.path.dirname(os.path.dirname(os.path.abspath(supervisor.__file__)))
    # -S: no site-packages, the server needs the standard library and this package only.
    argv = [sys.executable, "-S", "-m", __name__, str(theirs.fileno()), str(os.getpid())]
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            pass_fds=[theirs.fileno()],
            # Its own session: a Ctrl-C at the daemon's terminal is the daemon's to handle.
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": root},
        )
    except OSError as err:
        ours.close()
        raise ForkServerError(f"cannot start {argv[0]}: {err}") from None
    finally:
        theirs.close()
    try:
        if not select.select([ours], [], [], timeout)[0]:
            raise ForkServerError(f"no Hello within {timeout}s")
        frame = recv_frame(ours)
        if frame is None:
            raise ForkServerError(f"exited at start-up (wait status {proc.wait()})")
        decode_server(frame[0], (Hello,))
    except (ForkServerError, ProtocolError, OSError) as err:
        proc.kill()
        proc.wait()
        ours.close()
        if isinstance(err, ForkServerError):
            raise
        raise ForkServerError(f"bad start-up: {err}") from None
    return proc, ours


# -- server side -------------------------------------------------------------------------------


def _handle(
    sock: socket.socket, header: bytes, body: bytes, fds: list[int], sys: Syscalls
) -> tuple[int, int] | None:
    """Fork a launcher for one request; its (pidfd, pid) to reap it later, or None."""
    try:
        req = decode_server(header, (ForkRequest,))
        if req.fds != _REQUEST_FDS or len(fds) != _REQUEST_FDS:
            raise ProtocolError(f"{_REQUEST_FDS} fds", f"{len(fds)} (announced {req.fds})")
        sync_w, go_r, stdout, stderr = fds
        plan = replace(decode_plan(body), stdout_fd=stdout, stderr_fd=stderr)
        pid = sys.fork()
        if pid == 0:
            try:
                run_launcher(plan, ChildFds(sync_w, go_r), sys)
            finally:
                os._exit(1)
    except (ProtocolError, OSError) as err:
        code = (err.errno or 0) if isinstance(err, OSError) else 0
        send_frame(sock, encode_server(ServerError(code, f"cannot fork a launcher: {err}")))
        return None
    finally:
        for fd in fds:
            os.close(fd)
    pidfd = os.pidfd_open(pid)  # before any wait: the PID cannot be recycled yet
    send_frame(sock, encode_server(Forked(pid)), fds=[pidfd])
    return pidfd, pid


def serve(sock: socket.socket, sys: Syscalls = REAL) -> int:
    """The server loop: one request at a time (the daemon waits for each reply). Launchers are
    reaped as their pidfds turn readable, so none lingers as a zombie."""
    launchers: dict[int, int] = {}  # pidfd -> pid
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    send_frame(sock, encode_server(Hello(os.getpid())))
    while True:
        for fd, _ in poller.poll():
            if fd in launchers:
                os.waitpid(launchers.pop(fd), 0)
                poller.unregister(fd)
                os.close(fd)
                continue
            frame = recv_frame(sock)
            if frame is None:
                return 0  # the daemon closed its end
            forked = _handle(sock, *frame, sys)
            if forked is not None:
                launchers[forked[0]] = forked[1]
                poller.register(forked[0], select.POLLIN)


def main(argv: list[str] | None = None) -> int:
    fd, daemon = (int(a) for a in (argv or sys.argv[1:]))
    # Die with the daemon: a server outliving it would keep forking for nobody. getppid() after
    # arming catches a daemon that died before.
    REAL.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != daemon:
        return 1
    # Orphaned sandbox PID 1s must go to the daemon, never to us (prctl(2): not inherited, but
    # cleared explicitly in case the interpreter was started by a subreaper-aware wrapper).
    REAL.prctl(PR_SET_CHILD_SUBREAPER, 0)
    # No collection, ever: a forked launcher must not run finalizers, and the server allocates
    # next to nothing.
    gc.disable()
    return serve(socket.socket(fileno=fd))


if __name__ == "__main__":
    sys.exit(main())
