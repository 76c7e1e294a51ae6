"""A fork server: a small helper process that forks sandbox launchers on the daemon's behalf.

Why: fork, exit and exec cost grows with the forking process's address space (page tables are
copied at fork and torn down at exit). The daemon carries aiohttp, pyroute2, pydantic and
structlog (~60 MB); a fresh interpreter that imports only the launcher's modules is ~15 MB, so
the launcher it forks is cheaper to create and to tear down. It is also single-threaded by
construction, which the daemon otherwise has to check before every fork (launch.py).

    server = ForkServer.start()      # once, by the daemon (spawned, not forked: starts small)
    launch(request, server=server)   # launch.py: the launcher is forked by the server
    ...
    server.close()                   # at shutdown

The server also forks exec health probe commands into their sandboxes, watches and reaps them
(`ForkServer.enter`, sandbox/server/probe_run.py): forking the big daemon for each probe is
what kept it from probing many units often.

The launch protocol is unchanged: the daemon still creates the sync and go pipes and sends
them, with the service's stdout/stderr and the fds PID 1 keeps, alongside the plan
(wire/protocol.py, the second table). The server forks the launcher exactly as the daemon would
(ahead of time: a spare launcher waits for each request, server/serverloop.py); the launcher's PID 1
re-parents to the daemon (a child subreaper; the server is not one), so the daemon still owns,
watches and reaps every sandbox.
The server only reaps its own launchers.

Lifetime: the server dies with the daemon (PR_SET_PDEATHSIG, checked against a daemon that died
before it was armed, and EOF on its socket). If the server dies, the daemon notices before the
next request and starts a new one; a launch the death interrupted fails with stage
"forkserver", as does any error of the server itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from supervisor.errors import LaunchError, SupervisorError
from supervisor.sandbox.child.stage import OFF, ChildFds, ChildPlan, Marks
from supervisor.sandbox.wire.frames import recv_frame, send_frame, wait_readable
from supervisor.sandbox.wire.plancodec import Ops, PartOffer, encode_for_server
from supervisor.sandbox.wire.protocol import (
    EnterRequest,
    Forked,
    ForkRequest,
    Hello,
    ProtocolError,
    ServerError,
    Spare,
    decode_server,
    encode_server,
)

if TYPE_CHECKING:
    import subprocess

START_TIMEOUT = 10.0
# Bytes of plan blobs (seccomp program, /etc copies: plancodec.CACHEABLE) the server keeps for
# later plans to name by digest. Past it, new blobs travel with each plan, as all did before.
CACHE_BUDGET = 4 << 20
# Mount ops the server keeps decoded (plancodec.py's parts): ~40 a unit, so a few hundred
# units' roots, ~4 MB in the server. Every byte of its memory makes forking a launcher dearer;
# past it, a unit's ops travel with each of its plans, as all did before.
PARTS_BUDGET = 10_000
SERVER_MODULE = "supervisor.sandbox.server"  # its __main__ runs the server's loop


class ForkServerError(SupervisorError):
    """The fork server cannot be started (or restarted)."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(f"fork server: {message}")


class ServerLauncher:
    """A launcher forked by the server, seen from the daemon through a pidfd."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid, self._pidfd = pid, pidfd

    def kill(self) -> None:
        if self._pidfd >= 0:  # a pidfd cannot hit a recycled PID
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    @property
    def pidfd(self) -> int:
        """-1 once reaped or closed, or if it was already gone when the server answered."""
        return self._pidfd

    def close(self) -> None:
        """Stop watching it without waiting (the server reaps it)."""
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def reap(self) -> None:
        """Wait for it to exit (the server reaps it): from then on PID 1 is the daemon's child,
        as after a direct launch, so waitpid() on it works. If the server died first, the
        launcher re-parented to the daemon (a child subreaper) and is reaped here."""
        if self._pidfd >= 0:
            pidfd, self._pidfd = self._pidfd, -1
            try:
                wait_readable(pidfd)
                with contextlib.suppress(ChildProcessError):  # the server's child, as it should
                    os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
            finally:
                os.close(pidfd)


class ForkServer:
    """The daemon's handle on its fork server: start, fork launchers, restart, close."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket, spare: int) -> None:
        self._proc, self._sock = proc, sock
        self._spare = spare  # the server's idle launcher: ours to reap if the server dies
        # The blobs this server keeps (offered with a request it answered), and their bytes.
        self._held: set[str] = set()
        self._held_bytes = 0
        self._parts_ops = 0
        # The op tuples it keeps decoded: id(ops) -> (token, ops) (plancodec.HeldParts).
        self._parts: dict[int, tuple[str, Ops]] = {}
        self._tokens = itertools.count()  # never reused, across restarts too
        self.restarts = 0
        self._given_up = False  # killed by us (_give_up): restarted at the next request
        self.last_exit: int | None = None  # wait status of the last server that died
        # One request is on the socket at a time (the answers carry no request id). An
        # awaited fork (fork_async) holds `_turn` from its send to its answer; a synchronous
        # request (a probe's enter) arriving meanwhile reads that answer first and hands it
        # over through `_pending` (see _settle).
        self._turn: asyncio.Lock | None = None
        self._pending: _Pending | None = None

    @classmethod
    def start(cls, timeout: float = START_TIMEOUT) -> ForkServer:
        """Spawn the server (a fresh interpreter) and wait for its Hello; ForkServerError if not."""
        return cls(*_spawn(timeout))

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return not self._given_up and self._proc.poll() is None

    def _give_up(self) -> None:
        """Kill a server that failed a request. It counts as dead from here: SIGKILL takes a
        moment to land, and a request sent meanwhile would meet EOF instead of a new server."""
        self._proc.kill()
        self._given_up = True

    def _restart(self) -> None:
        self.last_exit = self._proc.wait()
        self._read_notices()
        self._sock.close()
        _reap_orphan(self._spare)
        self._proc, self._sock, self._spare = _spawn(START_TIMEOUT)
        self._held, self._held_bytes = set(), 0  # a new server keeps nothing yet
        self._parts, self._parts_ops = {}, 0
        self._given_up = False
        self.restarts += 1

    def ensure(self) -> None:
        """Restart the server if it died (ForkServerError if it cannot be restarted)."""
        if not self.alive():
            self._restart()

    def fork(
        self, unit: str, plan: ChildPlan, fds: ChildFds, deadline: float, marks: Marks = OFF
    ) -> ServerLauncher | None:
        """Have the server fork a launcher for `plan`; None if the server died during the
        request (the launcher may exist: the sync pipe tells). Raises LaunchError."""
        request = _ForkFrame(self, plan, fds, marks)
        launcher = self._request(
            unit, request.frame, request.passed, deadline, spare=True, marks=marks
        )
        if launcher is not None:  # answered: the server kept what it was offered
            self._keep(request)
        return launcher

    def _keep(self, request: _ForkFrame) -> None:
        for digest, _, length in request.offers:
            self._held.add(digest)
            self._held_bytes += length
        for token, count, ops in request.parts:
            self._parts[id(ops)] = (token, ops)
            self._parts_ops += count

    def _token(self) -> str:
        return f"p{next(self._tokens)}"

    async def fork_async(
        self, unit: str, plan: ChildPlan, fds: ChildFds, deadline: float, marks: Marks = OFF
    ) -> ServerLauncher | None:
        """`fork` for the daemon's loop: the server's answer is awaited, not blocked on (it
        may be busy forking the spare for the previous launch), so the loop plans the next
        launch and answers the API meanwhile."""
        loop = asyncio.get_running_loop()
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:
            self._settle()  # the answer to a cancelled fork, if any, is read and dropped
            request = _ForkFrame(self, plan, fds, marks)
            self._send(unit, request.frame, request.passed, marks)
            pending = self._pending = _Pending(unit, deadline, loop.create_future())
            try:
                while True:
                    await self._readable(loop, pending, deadline)
                    if pending.outcome is not None:  # a synchronous request read it for us
                        answer = pending.result()
                        break
                    reply = self._reply(unit, deadline, spare=True, block=False)
                    if not isinstance(reply, _NotYet):
                        answer = reply
                        break
                if answer is not None:  # answered: the server kept what it was offered
                    self._keep(request)
                return answer
            except asyncio.CancelledError:
                # Its answer is still to come: the next request reads it first (_settle),
                # or it would be taken for that request's own.
                pending.abandoned = True
                raise
            finally:
                if not pending.abandoned:
                    self._pending = None

    async def _readable(
        self, loop: asyncio.AbstractEventLoop, pending: _Pending, deadline: float
    ) -> None:
        """Until the socket is readable or `_settle` answered `pending`; LaunchError (and the
        server killed, as `_reply` does) at `deadline`."""
        if pending.outcome is not None:
            return
        woken: asyncio.Future[None] = loop.create_future()
        pending.woken = woken

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        loop.add_reader(self._sock, wake)
        try:
            await asyncio.wait_for(woken, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            self._give_up()
            raise LaunchError(
                pending.unit, "forkserver", "the fork server did not answer in time"
            ) from None
        finally:
            loop.remove_reader(self._sock)

    def _settle(self) -> None:
        """A synchronous request while an awaited fork waits for its answer: read that answer
        now (the server answers in order), and hand it to the fork's task."""
        pending = self._pending
        if pending is None or pending.outcome is not None:
            return
        answer: ServerLauncher | _NotYet | None = None
        try:
            answer = self._reply(pending.unit, pending.deadline, spare=True, block=True)
        except LaunchError as err:
            pending.outcome = (None, err)
        else:
            assert not isinstance(answer, _NotYet)
            pending.outcome = (answer, None)
        if pending.abandoned:  # nobody waits for it: the launcher exits at EOF on its pipes
            self._pending = None
            if isinstance(answer, ServerLauncher):
                answer.close()
            return
        if pending.woken is not None and not pending.woken.done():
            pending.woken.set_result(None)

    def enter(
        self, unit: str, req: EnterRequest, bpf: bytes, fds: Sequence[int], deadline: float
    ) -> ServerLauncher | None:
        """Have the server fork an exec probe's command (`fds`: report_w, output_w and a pidfd
        of the sandbox's PID 1; server/probe_run.py): a handle on the command, None if the server
        died meanwhile, LaunchError if the sandbox could not be entered."""
        return self._request(unit, lambda: (encode_server(req), bpf), fds, deadline, spare=False)

    def _request(
        self,
        unit: str,
        frame: Callable[[], tuple[bytes, bytes]],
        passed: Sequence[int],
        deadline: float,
        *,
        spare: bool,
        marks: Marks = OFF,
    ) -> ServerLauncher | None:
        """Send one request (`frame()` makes its header and body), read its answer. `spare`:
        the request uses up the idle spare launcher (a launch does; a probe is forked by the
        server itself)."""
        self._settle()
        self._send(unit, frame, passed, marks)
        answer = self._reply(unit, deadline, spare)
        assert not isinstance(answer, _NotYet)
        return answer

    def _send(
        self,
        unit: str,
        frame: Callable[[], tuple[bytes, bytes]],
        passed: Sequence[int],
        marks: Marks = OFF,
    ) -> None:
        try:
            self.ensure()
        except ForkServerError as err:
            raise LaunchError(unit, "forkserver", err.message) from None
        try:
            send_frame(self._sock, *frame(), passed)
        except (BrokenPipeError, ConnectionResetError):
            # It died after ensure() and before reading: nothing was forked, so one retry is safe.
            try:
                self._restart()
                send_frame(self._sock, *frame(), passed)
            except (ForkServerError, OSError) as err:
                raise LaunchError(
                    unit, "forkserver", f"cannot reach the fork server: {err}"
                ) from None
        marks.mark("daemon: request sent to the fork server")

    def _reply(
        self, unit: str, deadline: float, spare: bool, *, block: bool = True
    ) -> ServerLauncher | _NotYet | None:
        """The answer to the request on the socket; `block=False`: _NOT_YET once nothing
        more is there to read (only Spare notices were)."""
        while True:
            left = max(0.0, deadline - time.monotonic()) if block else 0.0
            if not wait_readable(self._sock, left):
                if not block:
                    return _NOT_YET
                # A late reply would be read as the next request's: this server is done for.
                self._give_up()
                raise LaunchError(unit, "forkserver", "the fork server did not answer in time")
            try:
                try:
                    frame = recv_frame(self._sock)
                except ConnectionResetError:  # it died with our request unread
                    frame = None
                if frame is None:
                    return None
                header, _, fds = frame
                msg = decode_server(header, (Forked, ServerError, Spare))
            except (ProtocolError, OSError) as err:
                self._give_up()
                raise LaunchError(unit, "forkserver", str(err)) from None
            if not isinstance(msg, Spare):
                break
            self._spare = msg.pid  # the notice after the previous answer
        if isinstance(msg, ServerError):
            for fd in fds:
                os.close(fd)
            raise LaunchError(unit, "forkserver", msg.message, msg.errno)
        assert isinstance(msg, Forked)
        if spare:
            self._spare = 0  # handed out; the next one is announced by a Spare notice
        for fd in fds[1:]:
            os.close(fd)
        return ServerLauncher(msg.pid, fds[0] if fds else -1)

    def _read_notices(self) -> None:
        """Take the Spare notices already sent (the server is dead or done: nothing blocks)."""
        if self._sock.fileno() < 0:  # closed by a restart that failed
            return
        with contextlib.suppress(ProtocolError, OSError):
            while wait_readable(self._sock, 0):
                frame = recv_frame(self._sock)
                if frame is None:
                    return
                for fd in frame[2]:
                    os.close(fd)
                msg = decode_server(frame[0], (Spare, Forked, ServerError))
                if isinstance(msg, Spare):
                    self._spare = msg.pid

    def died(self) -> str:
        """Why a request got no answer, for its LaunchError (the next request restarts it)."""
        try:
            status: int | str = self._proc.wait(1.0)
        except Exception:
            status = "unknown"
        return f"the fork server died during the launch (wait status {status})"

    def close(self, timeout: float = 5.0) -> None:
        """EOF on its socket makes the server exit; SIGKILL if it does not within `timeout`."""
        self._read_notices()
        self._sock.close()
        try:
            self._proc.wait(timeout)
        except Exception:
            self._proc.kill()
            self._proc.wait()
            _reap_orphan(self._spare)


class _NotYet:
    """No answer on the socket yet (an awaited fork reads without blocking)."""


_NOT_YET = _NotYet()


class _ForkFrame:
    """A launch's request to the server: the fds it passes, and its frame, made (`frame()`)
    for the server it goes to: a restarted one holds no blob yet. `offers` and `parts`: the
    blobs and op tuples the last frame offered, which the server keeps once it answers."""

    def __init__(self, server: ForkServer, plan: ChildPlan, fds: ChildFds, marks: Marks) -> None:
        self._server, self._plan, self._marks = server, plan, marks
        self.passed = [fds.sync_w, fds.go_r, plan.stdout_fd, plan.stderr_fd, *fds.keep]
        self.offers: list[tuple[str, int, int]] = []
        self.parts: list[PartOffer] = []

    def frame(self) -> tuple[bytes, bytes]:
        server = self._server
        encoded = encode_for_server(
            self._plan, server._held, CACHE_BUDGET - server._held_bytes, parts=server._parts,
            token=server._token, part_budget=PARTS_BUDGET - server._parts_ops,
        )  # fmt: skip
        self.offers, self.parts = encoded.offers, encoded.parts
        self._marks.mark("daemon: plan encoded")
        parts = [(token, count) for token, count, _ in self.parts]
        return encode_server(ForkRequest(len(self.passed), self.offers, parts)), encoded.body


class _Pending:
    """An awaited fork's request, sent and not answered yet."""

    def __init__(self, unit: str, deadline: float, woken: asyncio.Future[None]) -> None:
        self.unit, self.deadline, self.woken = unit, deadline, woken
        self.abandoned = False  # its task was cancelled: the answer is read and dropped
        # (answer, None) or (None, the LaunchError), when a synchronous request read it
        self.outcome: tuple[ServerLauncher | None, LaunchError | None] | None = None

    def result(self) -> ServerLauncher | None:
        assert self.outcome is not None
        answer, err = self.outcome
        if err is not None:
            raise err
        return answer


def _reap_orphan(pid: int, timeout: float = 1.0) -> None:
    """Reap the dead server's spare launcher, which re-parented to us (its PR_SET_PDEATHSIG
    kills it). Bounded: a PID that is not, or not yet, our child is left alone."""
    if pid <= 0:
        return
    with contextlib.suppress(OSError):
        pidfd = os.pidfd_open(pid)
        try:
            wait_readable(pidfd, timeout)
        finally:
            os.close(pidfd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _spawn(timeout: float) -> tuple[subprocess.Popen[bytes], socket.socket, int]:
    import subprocess  # noqa: PLC0415  (daemon side only: the server never needs it)

    import supervisor  # noqa: PLC0415

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    root = os.path.dirname(os.path.dirname(os.path.abspath(supervisor.__file__)))
    # -S: no site-packages, the server needs the standard library and this package only.
    argv = [sys.executable, "-S", "-m", SERVER_MODULE, str(theirs.fileno()), str(os.getpid())]
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
        if not wait_readable(ours, timeout):
            raise ForkServerError(f"no Hello within {timeout}s")
        frame = recv_frame(ours)
        if frame is None:
            raise ForkServerError(f"exited at start-up (wait status {proc.wait()})")
        hello = decode_server(frame[0], (Hello,))
    except (ForkServerError, ProtocolError, OSError) as err:
        proc.kill()
        proc.wait()
        ours.close()
        if isinstance(err, ForkServerError):
            raise
        raise ForkServerError(f"bad start-up: {err}") from None
    return proc, ours, hello.spare
