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
(wire/protocol.py, the second table). The server forks the launcher exactly as the daemon would,
ahead of time: a spare launcher waits for each launch, and the daemon holds its channel and
sends it the launch itself, so the server is not woken on the launch's path
(server/serverloop.py); the launcher's PID 1
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
from supervisor.linux.syscalls import HolderRoot
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
    Used,
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

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        sock: socket.socket,
        spare: _DirectSpare | None,
        holder: HolderRoot | None = None,
    ) -> None:
        self._proc, self._sock = proc, sock
        # The user-namespace holder's root (the daemon's fd), handed to every server started.
        self._holder = holder
        # The server's idle launcher, whose channel only we hold: the next launch goes to it
        # directly (ours to reap if the server dies). None: none offered yet or none left.
        self._direct = spare
        self._owed = False  # a Used was sent: its Spare notice is still to be read
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
        # An awaited fork waiting for a Spare notice: woken by whoever reads it (_take_spare).
        self._spare_waiter: asyncio.Future[None] | None = None

    @classmethod
    def start(cls, timeout: float = START_TIMEOUT, holder: HolderRoot | None = None) -> ForkServer:
        """Spawn the server (a fresh interpreter) and wait for its Hello; ForkServerError if not.
        `holder`: the user-namespace holder's root its launchers look their files up in."""
        return cls(*_spawn(timeout, holder), holder)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def spare_pid(self) -> int:
        """The idle spare launcher's PID (0: none held)."""
        return 0 if self._direct is None else self._direct.pid

    def spare_fds(self) -> tuple[int, ...]:
        """The fds held for the idle spare launcher, its channel and pidfd (none while none is
        held): always one spare's, but other numbers after every launch."""
        spare = self._direct
        return () if spare is None else (spare.channel.fileno(), spare.pidfd)

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
        self._drop_spare(reap=True)
        self._proc, self._sock, self._direct = _spawn(START_TIMEOUT, self._holder)
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
        self._settle()
        self._ensure(unit)
        self._take_notices(unit, deadline, block=True)
        direct = self._hand_to_spare(request, marks)
        if direct is not None:
            return direct
        launcher = self._request(
            unit, request.frame, request.passed, deadline, spare=True, marks=marks
        )
        if launcher is not None:  # answered: the server kept what it was offered
            self._keep(request)
        return launcher

    def _ensure(self, unit: str) -> None:
        try:
            self.ensure()
        except ForkServerError as err:
            raise LaunchError(unit, "forkserver", err.message) from None

    def _hand_to_spare(self, request: _ForkFrame, marks: Marks) -> ServerLauncher | None:
        """Send the launch straight to the idle spare, then tell the server (Used); None if
        there is no spare, or it died idle (the launch then goes through a ForkRequest)."""
        spare, self._direct = self._direct, None
        if spare is None:
            return None
        header, body = request.used_frame()
        try:
            send_frame(spare.channel, b"", body, request.passed)
        except OSError:  # EPIPE: killed while idle (the server reaps it)
            spare.close()
            return None
        finally:
            spare.channel.close()
        marks.mark("daemon: request sent to the spare")
        try:
            send_frame(self._sock, header, body)
            self._owed = True
        except OSError:
            # The server died: the spare dies with it (its pdeathsig) and the sync pipe tells
            # the launch so; the next request restarts the server.
            self._give_up()
        self._keep(request)
        return ServerLauncher(spare.pid, spare.pidfd)

    def _take_spare(self, msg: Spare, fds: list[int]) -> None:
        """A Spare notice: the next idle launcher, its channel and a pidfd (none: pid 0)."""
        self._owed = False
        self._drop_spare(reap=False)  # a ForkRequest's notice while we held one: unused
        if msg.pid > 0 and len(fds) == 2:
            self._direct = _DirectSpare(msg.pid, socket.socket(fileno=fds[0]), fds[1])
        else:
            for fd in fds:
                os.close(fd)
        waiter = self._spare_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _drop_spare(self, *, reap: bool) -> None:
        """Close the idle spare's channel (it exits at EOF); `reap`: the server is dead, so the
        spare re-parented to us and is reaped here."""
        spare, self._direct = self._direct, None
        if spare is not None:
            spare.channel.close()
            spare.close()
            if reap:
                _reap_orphan(spare.pid)

    def _no_spare(self, unit: str) -> LaunchError:
        """A Spare notice that does not come: this server is done for (as in _reply)."""
        self._give_up()
        self._owed = False
        return LaunchError(unit, "forkserver", "the fork server sent no spare in time")

    def _take_notices(self, unit: str, deadline: float, *, block: bool) -> None:
        """Read the Spare notice a Used is owed (`block`: until it comes or `deadline`). No
        answer is pending here (_settle read it), so nothing else may come."""
        while self._owed:
            left = max(0.0, deadline - time.monotonic()) if block else 0.0
            if not wait_readable(self._sock, left):
                if not block:
                    return
                raise self._no_spare(unit)
            frame = None
            try:
                frame = recv_frame(self._sock)
                if frame is None:  # died: restarted at the next request
                    self._owed = False
                    return
                msg = decode_server(frame[0], (Spare,))
            except (ProtocolError, OSError) as err:
                for fd in frame[2] if frame else ():
                    os.close(fd)
                self._give_up()
                self._owed = False
                raise LaunchError(unit, "forkserver", str(err)) from None
            self._take_spare(msg, frame[2])

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
            self._ensure(unit)
            await self._spare_owed(loop, unit, deadline)
            direct = self._hand_to_spare(request, marks)
            if direct is not None:
                return direct
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

    async def _spare_owed(
        self, loop: asyncio.AbstractEventLoop, unit: str, deadline: float
    ) -> None:
        """Until the Spare notice owed for the last Used is read (by us or by a synchronous
        request's reply); LaunchError (and the server killed) at `deadline`."""
        while self._owed:
            self._take_notices(unit, deadline, block=False)
            if not self._owed:
                return
            woken = self._spare_waiter = loop.create_future()
            try:
                if not await self._socket_or_woken(loop, woken, deadline):
                    raise self._no_spare(unit)
            finally:
                self._spare_waiter = None

    async def _readable(
        self, loop: asyncio.AbstractEventLoop, pending: _Pending, deadline: float
    ) -> None:
        """Until the socket is readable or `_settle` answered `pending`; LaunchError (and the
        server killed, as `_reply` does) at `deadline`."""
        if pending.outcome is not None:
            return
        woken: asyncio.Future[None] = loop.create_future()
        pending.woken = woken
        if not await self._socket_or_woken(loop, woken, deadline):
            self._give_up()
            raise LaunchError(pending.unit, "forkserver", "the fork server did not answer in time")

    async def _socket_or_woken(
        self, loop: asyncio.AbstractEventLoop, woken: asyncio.Future[None], deadline: float
    ) -> bool:
        """Until the server's socket is readable, or `woken` is set by a synchronous request
        that read the awaited message first; False at `deadline`."""

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        loop.add_reader(self._sock, wake)
        try:
            await asyncio.wait_for(woken, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(self._sock)
        return True

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
            self._take_spare(msg, fds)  # the notice after the previous answer or Used
        if isinstance(msg, ServerError):
            for fd in fds:
                os.close(fd)
            raise LaunchError(unit, "forkserver", msg.message, msg.errno)
        assert isinstance(msg, Forked)
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
                for fd in frame[2]:  # a Spare's channel: its spare dies with the server
                    os.close(fd)
                decode_server(frame[0], (Spare, Forked, ServerError))
                self._owed = False

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
        spare = self.spare_pid
        self._drop_spare(reap=False)  # EOF on its channel: the spare exits
        self._sock.close()
        try:
            self._proc.wait(timeout)
        except Exception:
            self._proc.kill()
            self._proc.wait()
            _reap_orphan(spare)


class _DirectSpare(ServerLauncher):
    """The server's idle spare launcher as the daemon holds it: its PID, a pidfd (the launch's
    handle once it is sent) and its channel, which nothing else holds."""

    def __init__(self, pid: int, channel: socket.socket, pidfd: int) -> None:
        super().__init__(pid, pidfd)
        self.channel = channel


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

    def used_frame(self) -> tuple[bytes, bytes]:
        """The Used notice for the server and the plan (the spare's frame's body)."""
        _, body = self.frame()
        parts = [(token, count) for token, count, _ in self.parts]
        return encode_server(Used(self.offers, parts)), body


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


def _spawn(
    timeout: float, holder: HolderRoot | None = None
) -> tuple[subprocess.Popen[bytes], socket.socket, _DirectSpare | None]:
    import subprocess  # noqa: PLC0415  (daemon side only: the server never needs it)

    import supervisor  # noqa: PLC0415

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fds: list[int] = []
    root = os.path.dirname(os.path.dirname(os.path.abspath(supervisor.__file__)))
    # -S: no site-packages, the server needs the standard library and this package only.
    argv = [sys.executable, "-S", "-m", SERVER_MODULE, str(theirs.fileno()), str(os.getpid())]
    passed = [theirs.fileno()]
    if holder is not None:
        argv.append(f"{holder.fd}:{holder.dev}:{holder.ino}")
        passed.append(holder.fd)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            pass_fds=passed,
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
        fds = frame[2]
        hello = decode_server(frame[0], (Hello,))
        if hello.spare > 0 and len(fds) != 2:
            raise ProtocolError("a spare's channel and pidfd", f"{len(fds)} fds")
    except (ForkServerError, ProtocolError, OSError) as err:
        for fd in fds:
            os.close(fd)
        proc.kill()
        proc.wait()
        ours.close()
        if isinstance(err, ForkServerError):
            raise
        raise ForkServerError(f"bad start-up: {err}") from None
    if hello.spare <= 0:
        return proc, ours, None
    return proc, ours, _DirectSpare(hello.spare, socket.socket(fileno=fds[0]), fds[1])
