"""Exec health probes, the daemon's side: ask the fork server to run a command in a sandbox.

The daemon does not fork: the fork server forks the command into the sandbox (entered as
`sandboxctl exec` does, but into the probe's sub-cgroup), kills it after `timeout`, reaps it
and reports on a pipe (server/probe_run.py is the server's side; wire/protocol.py,
EnterRequest). Forking the daemon (~60 MB) for every probe was what limited how many units
could be probed how often.

Here: send the request, read two pipes from the event loop (the report, the command's output),
and decode the report. What the outcome means (healthy or not) is the engine's to say.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from supervisor.cgroups import Subgroup
from supervisor.errors import LaunchError, ProbeStartError
from supervisor.linux import seccomp
from supervisor.sandbox.host.forkserver import ForkServer, ForkServerError, ServerLauncher
from supervisor.sandbox.wire.protocol import (
    EnterRequest,
    Exited,
    Message,
    ProtocolError,
    decode,
)

OUTPUT_KEEP = 2048  # bytes of probe output kept (the rest is read and dropped)
REPORT_MAX = 8192  # bytes of report read (three short JSON lines)
SERVER_REPLY_TIMEOUT = 5.0
ORPHAN_CHECKS = 50  # every 0.1 s: how long a dying server may take to hand its children over


@dataclass(frozen=True)
class Outcome:
    status: int | None
    timed_out: bool
    output: str


class ForkServerProber:
    def __init__(self, loop: asyncio.AbstractEventLoop, server: ForkServer) -> None:
        self.loop, self.server = loop, server

    def start(
        self, unit: str, pid: int, argv: Sequence[str], cgroup: Subgroup, timeout: float
    ) -> Job:
        dirs = [os.path.dirname(f) for f in cgroup.procs_files()]
        request = EnterRequest(pid, list(argv), dirs, timeout)
        bpf = seccomp.default_bpf()  # compiled once; loaded only if PID 1 runs under it
        report_r, report_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        output_r, output_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        passed = [report_w, output_w]
        try:
            passed.append(os.pidfd_open(pid))  # PID 1 is our child: cannot be recycled
            # A dead server is restarted first: its start-up must not eat the answer's time.
            self.server.ensure()
            deadline = time.monotonic() + SERVER_REPLY_TIMEOUT
            command = self.server.enter(unit, request, bpf, passed, deadline)
        except BaseException as exc:
            os.close(report_r)
            os.close(output_r)
            if isinstance(exc, LaunchError | ForkServerError):  # LaunchError names the unit
                raise ProbeStartError(exc.message) from None
            if isinstance(exc, OSError):
                raise ProbeStartError(str(exc)) from None
            raise
        finally:
            for fd in passed:  # the server has its own copies now
                os.close(fd)
        return Job(self.loop, self.server, command, report_r, output_r)


@dataclass
class Job:
    """One probe run in flight: the command and the daemon's ends of its two pipes."""

    loop: asyncio.AbstractEventLoop
    server: ForkServer
    command: ServerLauncher | None  # None if the server died before it answered
    report_fd: int
    output_fd: int
    report: bytearray = field(default_factory=bytearray)
    output: bytearray = field(default_factory=bytearray)
    outcome: Outcome | None = None  # once finished

    async def reported(self, within: float) -> bool:
        done: asyncio.Future[None] = self.loop.create_future()

        def report_readable() -> None:
            if _collect(self.report_fd, self.report, REPORT_MAX) and not done.done():
                done.set_result(None)  # EOF: the server has said all it will

        def output_readable() -> None:
            if _collect(self.output_fd, self.output, OUTPUT_KEEP):
                self.loop.remove_reader(self.output_fd)  # EOF before the report: stop polling

        self.loop.add_reader(self.report_fd, report_readable)
        self.loop.add_reader(self.output_fd, output_readable)
        try:
            async with asyncio.timeout(within):
                await done
        except TimeoutError:
            return False
        finally:
            # Unless finish() got here first (the run ended while the probe ran): it removed
            # them and closed the fds, whose numbers may already belong to someone else.
            if self.outcome is None:
                self.loop.remove_reader(self.report_fd)
                self.loop.remove_reader(self.output_fd)
        return True

    def finish(self) -> Outcome:
        if self.outcome is not None:
            return self.outcome
        for fd in (self.report_fd, self.output_fd):
            self.loop.remove_reader(fd)
        _collect(self.report_fd, self.report, REPORT_MAX)
        _collect(self.output_fd, self.output, OUTPUT_KEEP)
        os.close(self.output_fd)
        os.close(self.report_fd)  # the server, if it writes later, gets EPIPE and goes on
        messages = _messages(self.report)
        exited = next((m for m in messages if isinstance(m, Exited)), None)
        text = self.output.decode("utf-8", errors="replace").strip()
        self.outcome = Outcome(
            None if exited is None else exited.status,
            exited is not None and exited.timed_out,
            text,
        )
        if self.command is not None:
            if exited is not None:
                self.command.close()  # reaped by the server
            else:  # the server died, or we gave up: the command may become ours to reap
                _reap_orphan_later(self.loop, self.command, self.server)
        return self.outcome


def _messages(report: bytes | bytearray) -> list[Message]:
    found: list[Message] = []
    for line in bytes(report).splitlines():
        with contextlib.suppress(ProtocolError):
            found.append(decode(line))
    return found


def _collect(fd: int, into: bytearray, keep: int) -> bool:
    """Read what is there (keeping the first `keep` bytes); True at end of file."""
    while True:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        if not data:
            return True
        if len(into) < keep:
            into += data[: keep - len(into)]


def _reap_orphan_later(
    loop: asyncio.AbstractEventLoop, command: ServerLauncher, server: ForkServer
) -> None:
    """The fork server died while the command ran (or the daemon gave up waiting): a command
    outliving its server re-parents to us, the daemon being a child subreaper. The kill of the
    probe's sub-cgroup has ended it (or will, when the run ends); once it has, reap it if it is
    ours. While the server lives, the command is the server's to reap."""
    pidfd = command.pidfd
    if pidfd < 0:
        return
    checks = ORPHAN_CHECKS

    def check() -> None:
        nonlocal checks
        checks -= 1
        try:
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            # Not ours: the live server reaps it, or a dying one has yet to hand it over.
            if checks > 0 and not server.alive():
                loop.call_later(0.1, check)
                return
        command.close()

    def ended() -> None:
        loop.remove_reader(pidfd)
        check()

    try:
        loop.add_reader(pidfd, ended)
    except RuntimeError:  # the loop is closing: the daemon exits and init reaps
        command.close()
