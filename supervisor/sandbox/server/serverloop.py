"""The fork server's side: spare launchers and the request loop (see host/forkserver.py).

Runs in the server process, a fresh interpreter that imports only the launcher's modules. One
spare launcher is always forked ahead: a launch request is checked and handed to it (plan bytes
and fds, over its own socketpair), the daemon gets its PID and a pidfd, and then the next spare
is forked while this one works. Every spare is reaped here as its pidfd turns readable.
The blobs a request offers (plancodec.py) are kept before it is handed on, so every spare
forked after has them for the plans that name them; a new spare first decodes the last plan
(and throws it away) to take its copy-on-write faults while idle.
An EnterRequest (an exec health probe) is served by the server itself: it forks the command
into the sandbox and watches it until it exits or its deadline passes (probe_run.py).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import socket
import time
from dataclasses import replace
from typing import NoReturn

from supervisor.linux.syscalls import PR_SET_PDEATHSIG, REAL, Syscalls
from supervisor.sandbox.child import enter
from supervisor.sandbox.child.stage import ChildFds, Marks, run_launcher
from supervisor.sandbox.server import probe_run
from supervisor.sandbox.wire.frames import recv_frame, send_frame, wait_readable
from supervisor.sandbox.wire.plancodec import Ops, decode_plan, keep_offered, keep_parts
from supervisor.sandbox.wire.protocol import (
    MAX_KEEP_FDS,
    ChildError,
    EnterRequest,
    Forked,
    ForkRequest,
    Hello,
    ProtocolError,
    ServerError,
    Spare,
    decode_server,
    encode,
    encode_server,
)

REQUEST_FDS = 4  # sync_w, go_r, stdout, stderr; then up to MAX_KEEP_FDS kept fds
ENTER_FDS = 3  # report_w, output_w, a pidfd of the sandbox's PID 1


class _Spare:
    """A launcher forked ahead of its request: the fork, the signal reset, the fd sweep and the
    copy-on-write faults they cause are paid while the daemon is idle, not during a launch.
    `warm`: the last plan the server forwarded, decoded once and dropped by the spare while it
    waits, so that the pages a decode writes (objects' reference counts, the allocator's
    arenas) are copied before the request comes, not while it is served."""

    def __init__(
        self,
        sys: Syscalls,
        warm: bytes = b"",
        cache: dict[str, bytes] | None = None,
        parts: dict[str, Ops] | None = None,
    ) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = sys.fork()
        except OSError:
            ours.close()
            theirs.close()
            raise
        if pid == 0:
            try:
                _spare_main(theirs, sys, warm, cache or {}, parts or {})
            finally:
                os._exit(1)
        theirs.close()
        self.pid, self.channel = pid, ours
        self.pidfd = os.pidfd_open(pid)  # before any wait: the PID cannot be recycled yet

    def alive(self) -> bool:
        return not wait_readable(self.pidfd, 0)


def _spare_main(
    channel: socket.socket,
    sys: Syscalls,
    warm: bytes,
    cache: dict[str, bytes],
    parts: dict[str, Ops],
) -> NoReturn:
    """A spare launcher: wait for one request from the server, then carry it out."""
    sys.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # not inherited across fork
    sys.reset_signals()
    sys.close_fds_except({channel.fileno()})
    if warm:
        with contextlib.suppress(ProtocolError):  # the server checked nothing in it
            decode_plan(warm, cache, parts)
    frame = recv_frame(channel)
    if frame is None:  # the server is done with us
        os._exit(0)
    received = time.monotonic_ns()  # one clock read: kept only if the plan asks for a trace
    _, body, (sync_w, go_r, stdout, stderr, *kept) = frame
    channel.close()
    try:
        plan = replace(decode_plan(body, cache, parts), stdout_fd=stdout, stderr_fd=stderr)
        if len(kept) != len(plan.keep_fds):
            raise ProtocolError(f"{len(plan.keep_fds)} kept fds", str(len(kept)))
    except ProtocolError as err:  # say so on the daemon's pipe: a child never fails silently
        with contextlib.suppress(OSError):
            os.write(sync_w, encode(ChildError("forkserver", 0, str(err))))
        os._exit(1)
    marks = Marks(plan.trace, ["forkserver: request received by the spare"], [received])
    marks.mark("forkserver: plan decoded")
    # The kept fds arrived at whatever numbers were free: the launcher moves them into place.
    run_launcher(plan, ChildFds(sync_w, go_r, tuple(kept)), sys, marks=marks, signals_reset=True)


def _check(header: bytes, fds: list[int]) -> ForkRequest | EnterRequest:
    """The request in `header`; ProtocolError unless it comes with the right number of fds."""
    req = decode_server(header, (ForkRequest, EnterRequest))
    if isinstance(req, EnterRequest):
        if len(fds) != ENTER_FDS:
            raise ProtocolError(f"{ENTER_FDS} fds", str(len(fds)))
        return req
    assert isinstance(req, ForkRequest)
    if not REQUEST_FDS <= req.fds <= REQUEST_FDS + MAX_KEEP_FDS:
        most = REQUEST_FDS + MAX_KEEP_FDS
        raise ProtocolError(f"{REQUEST_FDS} to {most} fds", f"{req.fds} announced")
    if len(fds) != req.fds:
        raise ProtocolError(f"{req.fds} fds", f"{len(fds)} (announced {req.fds})")
    return req


def _forward(frame: tuple[bytes, bytes, list[int]], spare: _Spare) -> None:
    """Hand a checked launch request to the spare launcher (the fds are closed either way)."""
    _, body, fds = frame
    try:
        send_frame(spare.channel, b"", body, fds)
    finally:
        for fd in fds:
            os.close(fd)
    spare.channel.close()


class _Server:
    """The server loop: one request at a time (the daemon waits for each reply). Launchers are
    reaped as their pidfds turn readable, so none lingers as a zombie or reaches the daemon."""

    def __init__(self, sock: socket.socket, sys: Syscalls) -> None:
        self.sock, self.sys = sock, sys
        self.launchers: dict[int, int] = {}  # pidfd -> pid
        self.probes: dict[int, probe_run.RunningProbe] = {}  # pidfd -> exec probe command
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        self.spare: _Spare | None = None
        self.last_plan = b""  # the last launch request's body, to warm the next spare with
        # Blobs the daemon offered (plancodec.py), by digest: every spare forked from here has
        # them, so a plan may name them instead of carrying them.
        self.cache: dict[str, bytes] = {}
        # Op tuples the daemon offered (plancodec.py's parts), decoded, by token: a spare
        # forked from here holds them, so a plan naming one decodes nothing of its root.
        self.parts: dict[str, Ops] = {}
        # To come back to after forking a probe command in a sandbox's PID namespace.
        self.own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)

    def _new_spare(self) -> _Spare:
        spare = _Spare(self.sys, self.last_plan, self.cache, self.parts)
        self.launchers[spare.pidfd] = spare.pid
        self.poller.register(spare.pidfd, select.POLLIN)
        return spare

    def _reap(self, pidfd: int) -> None:
        if self.spare is not None and self.spare.pidfd == pidfd:  # killed while idle
            self.spare.channel.close()
            self.spare = None
        os.waitpid(self.launchers.pop(pidfd), 0)
        self.poller.unregister(pidfd)
        os.close(pidfd)

    def _ready_spare(self) -> _Spare:
        if self.spare is None or not self.spare.alive():  # none yet, or it was killed
            if self.spare is not None:
                self.spare.channel.close()
                self.spare = None
            self.spare = self._new_spare()
        return self.spare

    def _request(self, frame: tuple[bytes, bytes, list[int]]) -> None:
        try:
            request = _check(frame[0], frame[2])
        except ProtocolError as err:
            for fd in frame[2]:
                os.close(fd)
            self._error(err)
            return
        if isinstance(request, EnterRequest):
            self._enter(request, frame[1], frame[2])
            return
        try:
            # Kept before the spare is handed the request: the next spare is forked with them.
            keep_offered(frame[1], request.offers, self.cache)
        except ProtocolError as err:
            for fd in frame[2]:
                os.close(fd)
            self._error(err)
            return
        try:
            used = self._ready_spare()
        except OSError as err:
            for fd in frame[2]:
                os.close(fd)
            self._error(err)
            return
        try:
            _forward(frame, used)
        except OSError as err:
            self._error(err)
            return
        self.last_plan = frame[1]
        send_frame(self.sock, encode_server(Forked(used.pid)), fds=[used.pidfd])
        if request.parts:
            # After the answer (the daemon does not wait for it), before the next spare's fork
            # (which then holds them). A bad plan is the spare's to report, on the sync pipe.
            with contextlib.suppress(ProtocolError):
                keep_parts(frame[1], {t for t, _ in request.parts}, self.cache, self.parts)
        # The next spare is forked once the daemon has its answer, while `used` works.
        try:
            self.spare = self._new_spare()
        except OSError:
            self.spare = None  # retried at the next request
            return
        send_frame(self.sock, encode_server(Spare(self.spare.pid)))

    def _error(self, err: ProtocolError | OSError) -> None:
        code = (err.errno or 0) if isinstance(err, OSError) else 0
        reply = ServerError(code, f"cannot fork a launcher: {err}")
        send_frame(self.sock, encode_server(reply))

    def _enter(self, req: EnterRequest, bpf: bytes, fds: list[int]) -> None:
        """An exec probe: fork its command here (probe_run.py), answer with its PID and pidfd."""
        try:
            probe = probe_run.start(req, bpf, fds, self.own_pid_ns, self.sys)
        except Exception as err:  # one bad request must not end the server
            code = (err.errno or 0) if isinstance(err, OSError) else 0
            what = f"{err.filename}: " if isinstance(err, OSError) and err.filename else ""
            text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            if not isinstance(err, OSError | enter.EnterError):
                text = f"{type(err).__name__}: {text}"
            reply = ServerError(code, f"cannot enter the sandbox: {what}{text}")
            send_frame(self.sock, encode_server(reply))
            return
        self.probes[probe.pidfd] = probe
        self.poller.register(probe.pidfd, select.POLLIN)
        send_frame(self.sock, encode_server(Forked(probe.pid)), fds=[probe.pidfd])

    def _probe_ended(self, pidfd: int) -> None:
        self.poller.unregister(pidfd)
        probe_run.finish(self.probes.pop(pidfd))

    def _poll_timeout(self) -> int | None:
        """Milliseconds until the next probe deadline (None: no probe is running)."""
        pending = [p.deadline for p in self.probes.values() if not p.timed_out]
        if not pending:
            return None
        return max(0, math.ceil((min(pending) - time.monotonic()) * 1000))

    def _expire_probes(self) -> None:
        now = time.monotonic()
        for probe in self.probes.values():
            if not probe.timed_out and probe.deadline <= now:
                probe_run.expire(probe)

    def run(self) -> int:
        self.spare = self._new_spare()
        send_frame(self.sock, encode_server(Hello(os.getpid(), self.spare.pid)))
        while True:
            for fd, _ in self.poller.poll(self._poll_timeout()):
                if fd in self.launchers:
                    self._reap(fd)
                    continue
                if fd in self.probes:
                    self._probe_ended(fd)
                    continue
                frame = recv_frame(self.sock)
                if frame is not None:
                    self._request(frame)
                    continue
                # The daemon closed its end: the spare sees EOF too. Reap everyone first, or
                # they would re-parent to the daemon as children it never asked for.
                if self.spare is not None:
                    self.spare.channel.close()
                for pidfd in list(self.launchers):
                    self._reap(pidfd)
                for pidfd, probe in list(self.probes.items()):
                    probe_run.expire(probe)
                    self._probe_ended(pidfd)
                return 0
            self._expire_probes()


def serve(sock: socket.socket, sys: Syscalls = REAL) -> int:
    return _Server(sock, sys).run()
