"""The fork server's side: spare launchers and the request loop (see host/forkserver.py).

Runs in the server process, a fresh interpreter that imports only the launcher's modules. One
spare launcher is always forked ahead, and its channel (a socketpair) and a pidfd of it go to
the daemon (in Hello, then in a Spare notice): the daemon sends a launch's plan bytes and fds
straight to it, then a Used notice here, and the next spare is forked while this one works.
Without a spare (its fork failed, or it died idle) the daemon sends a ForkRequest, which is
checked and handed to a spare forked for it. Every spare is reaped here as its pidfd turns
readable. The blobs a plan offers (plancodec.py) are kept before the next spare is forked, so
every spare forked after has them for the plans that name them; a new spare first decodes the
last plan (and throws it away) to take its copy-on-write faults while idle, unless its request
is there already.
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
from typing import NoReturn

from supervisor.linux.syscalls import PR_SET_PDEATHSIG, REAL, HolderRoot, Syscalls
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
    Used,
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
    waits (not once its request has come: _warm), so that the pages a decode writes (objects'
    reference counts, the allocator's arenas) are copied before the request comes, not while
    it is served."""

    def __init__(
        self,
        sys: Syscalls,
        warm: bytes = b"",
        cache: dict[str, bytes] | None = None,
        parts: dict[str, Ops] | None = None,
        holder: HolderRoot | None = None,
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
                _spare_main(theirs, sys, warm, cache or {}, parts or {}, holder=holder)
            finally:
                os._exit(1)
        theirs.close()
        self.pid, self.channel = pid, ours
        self.pidfd = os.pidfd_open(pid)  # before any wait: the PID cannot be recycled yet


def _spare_main(
    channel: socket.socket,
    sys: Syscalls,
    warm: bytes,
    cache: dict[str, bytes],
    parts: dict[str, Ops],
    *,
    holder: HolderRoot | None = None,
) -> NoReturn:
    """A spare launcher: wait for one request from the server, then carry it out."""
    sys.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # not inherited across fork
    sys.reset_signals()
    sys.close_fds_except({channel.fileno(), *(() if holder is None else (holder.fd,))})
    # A procfs instance of its own for the launch's sysctls, made while idle (host root, the
    # server's namespaces): see Syscalls.fresh_proc_sys. Without one (a kernel before 5.2),
    # the launcher uses the host's /proc/sys.
    try:
        proc_sys = sys.fresh_proc_sys()
    except OSError:
        proc_sys = -1
    _warm(channel, warm, cache, parts)
    frame = recv_frame(channel)
    if frame is None:  # the server is done with us
        os._exit(0)
    received = time.monotonic_ns()  # one clock read: kept only if the plan asks for a trace
    _, body, (sync_w, go_r, stdout, stderr, *kept) = frame
    channel.close()
    try:
        plan = decode_plan(body, cache, parts, {"stdout_fd": stdout, "stderr_fd": stderr})
        if len(kept) != len(plan.keep_fds):
            raise ProtocolError(f"{len(plan.keep_fds)} kept fds", str(len(kept)))
    except ProtocolError as err:  # say so on the daemon's pipe: a child never fails silently
        with contextlib.suppress(OSError):
            os.write(sync_w, encode(ChildError("forkserver", 0, str(err))))
        os._exit(1)
    marks = Marks(plan.trace, ["forkserver: request received by the spare"], [received])
    marks.mark("forkserver: plan decoded")
    # The kept fds arrived at whatever numbers were free: the launcher moves them into place.
    fds = ChildFds(sync_w, go_r, tuple(kept), holder, proc_sys)
    run_launcher(plan, fds, sys, marks=marks, signals_reset=True)


def _warm(
    channel: socket.socket, warm: bytes, cache: dict[str, bytes], parts: dict[str, Ops]
) -> bool:
    """Decode `warm` (the last plan) and drop it, unless the request is here already: then
    the decode of the request itself takes those faults, and a warm decode before it would
    only be the same work twice, on the launch's path (in a 300-unit start storm, 129 of 301
    spares had their request waiting by then, counted with per-stage probes that made each
    spare's idle work slower). True if it decoded."""
    if not warm or wait_readable(channel, 0):
        return False
    try:  # noqa: SIM105  (not contextlib.suppress: as stage._report)
        decode_plan(warm, cache, parts)
    except ProtocolError:  # the server checked nothing in it
        pass
    return True


def _check(header: bytes, fds: list[int]) -> ForkRequest | Used | EnterRequest:
    """The request in `header`; ProtocolError unless it comes with the right number of fds."""
    req = decode_server(header, (ForkRequest, Used, EnterRequest))
    if isinstance(req, Used):
        if fds:
            raise ProtocolError("no fds", str(len(fds)))
        return req
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

    def __init__(self, sock: socket.socket, sys: Syscalls, holder: HolderRoot | None) -> None:
        self.sock, self.sys = sock, sys
        # The daemon's user-namespace holder root (HolderRoot), given to every launcher.
        self.holder = holder
        self.launchers: dict[int, int] = {}  # pidfd -> pid
        self.probes: dict[int, probe_run.RunningProbe] = {}  # pidfd -> exec probe command
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        # The pidfd of the spare whose channel the daemon holds (-1: none): killed at EOF, as
        # the daemon may keep that channel open past its socket's.
        self.offered = -1
        self.last_plan = b""  # the last launch request's body, to warm the next spare with
        # Blobs the daemon offered (plancodec.py), by digest: every spare forked from here has
        # them, so a plan may name them instead of carrying them.
        self.cache: dict[str, bytes] = {}
        # Op tuples the daemon offered (plancodec.py's parts), decoded, by token: a spare
        # forked from here holds them, so a plan naming one decodes nothing of its root.
        self.parts: dict[str, Ops] = {}
        # To come back to after forking a probe command in a sandbox's PID namespace.
        self.own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)

    def _new_spare(self, warm: bool = True) -> _Spare:
        warmth = self.last_plan if warm else b""
        spare = _Spare(self.sys, warmth, self.cache, self.parts, self.holder)
        self.launchers[spare.pidfd] = spare.pid
        self.poller.register(spare.pidfd, select.POLLIN)
        return spare

    def _reap(self, pidfd: int) -> None:
        if pidfd == self.offered:
            self.offered = -1
        os.waitpid(self.launchers.pop(pidfd), 0)
        self.poller.unregister(pidfd)
        os.close(pidfd)

    def _offer_spare(self, hello: bool = False) -> None:
        """Fork the next spare and hand its channel and a pidfd to the daemon (in Hello at
        start-up, else in a Spare notice), which sends it a launch directly; only the daemon
        holds that channel from here. Pid 0 if the fork failed: the next launch is then a
        ForkRequest."""
        try:
            spare: _Spare | None = self._new_spare()
        except OSError:
            spare = None
        pid = 0 if spare is None else spare.pid
        header = encode_server(Hello(os.getpid(), pid) if hello else Spare(pid))
        if spare is None:
            send_frame(self.sock, header)
            return
        try:
            send_frame(self.sock, header, fds=[spare.channel.fileno(), spare.pidfd])
            self.offered = spare.pidfd
        finally:
            spare.channel.close()

    def _keep(self, body: bytes, request: ForkRequest | Used) -> None:
        """What the plan offered (plancodec.py), for the spares forked after it."""
        keep_offered(body, request.offers, self.cache)
        self.last_plan = body
        if request.parts:
            # A bad plan is its launcher's to report, on the sync pipe.
            with contextlib.suppress(ProtocolError):
                keep_parts(body, {t for t, _ in request.parts}, self.cache, self.parts)

    def _request(self, frame: tuple[bytes, bytes, list[int]]) -> bool:
        """Serve one request; False if the server must exit (a Used it cannot keep)."""
        try:
            request = _check(frame[0], frame[2])
        except ProtocolError as err:
            for fd in frame[2]:
                os.close(fd)
            self._error(err)
            return True
        if isinstance(request, EnterRequest):
            self._enter(request, frame[1], frame[2])
            return True
        if isinstance(request, Used):
            try:
                self._keep(frame[1], request)
            except ProtocolError:
                # The daemon counts the offers as kept and nobody answers a Used: exiting makes
                # it start a new server, which holds nothing.
                return False
            self._offer_spare()
            return True
        self._fork(request, frame)
        return True

    def _fork(self, request: ForkRequest, frame: tuple[bytes, bytes, list[int]]) -> None:
        """A ForkRequest: the daemon holds no spare, so one is forked for it and handed it."""
        try:
            self._keep(frame[1], request)  # before the fork: every spare from here has them
            used = self._new_spare(warm=False)  # its plan is on the way: nothing to warm
        except (ProtocolError, OSError) as err:
            for fd in frame[2]:
                os.close(fd)
            self._error(err)
            return
        try:
            _forward(frame, used)
        except OSError as err:
            self._error(err)
            return
        send_frame(self.sock, encode_server(Forked(used.pid)), fds=[used.pidfd])
        self._offer_spare()

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
        self._offer_spare(hello=True)
        while True:
            for fd, _ in self.poller.poll(self._poll_timeout()):
                if fd in self.launchers:
                    self._reap(fd)
                    continue
                if fd in self.probes:
                    self._probe_ended(fd)
                    continue
                frame = recv_frame(self.sock)
                if frame is not None and self._request(frame):
                    continue
                # The daemon closed its end (or sent a Used we cannot keep). Reap everyone
                # first, or they would re-parent to the daemon as children it never asked for;
                # the idle spare waits on the daemon's channel, not ours, so it is killed.
                if self.offered >= 0:
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(self.offered, signal.SIGKILL)
                for pidfd in list(self.launchers):
                    self._reap(pidfd)
                for pidfd, probe in list(self.probes.items()):
                    probe_run.expire(probe)
                    self._probe_ended(pidfd)
                return 0 if frame is None else 1
            self._expire_probes()


def serve(sock: socket.socket, sys: Syscalls = REAL, holder: HolderRoot | None = None) -> int:
    return _Server(sock, sys, holder).run()
