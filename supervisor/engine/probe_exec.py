"""The `exec = [...]` health probe: a command run inside the sandbox by the fork server.

The command is entered into the sandbox exactly as `sandboxctl exec` does it (sandbox/enter.py:
PID 1's namespaces, root, cwd, uid/gid, capabilities, no_new_privs, seccomp, environment),
except for its cgroup: it joins a *probe sub-cgroup* below the unit's, in every hierarchy the
unit has. So it counts against the unit's limits (memory, pids, cpu are hierarchical), and the
whole tree it may spawn (double forks, `setsid`, daemons) can be killed without touching the
service: freeze the sub-cgroup, SIGKILL everything listed, thaw, until it is empty (or
`cgroup.kill` where the kernel has it). A process group or a walk of /proc children would miss
whatever re-parented itself to the sandbox's PID 1; cgroup membership is inherited and cannot
be left without privileges the probe does not have.

The daemon does not fork: the fork server forks the command into the sandbox, kills it after
`timeout`, reaps it and reports its wait status on a pipe (sandbox/probe_run.py). Forking the
daemon (~60 MB) for every probe was what limited how many units could be probed how often.
The daemon makes the sub-cgroup, sends the request, and reads two pipes from its event loop
(the report, the command's output); when the report is in, anything left in the sub-cgroup is
killed. On `close()` (the run ends) the sub-cgroup is killed and removed, which also ends a
probe still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from supervisor.cgroups import UnitCgroup, files, teardown
from supervisor.engine.probes import ProbeResult, truncate
from supervisor.errors import CgroupError, LaunchError
from supervisor.linux import seccomp
from supervisor.log import get_logger
from supervisor.sandbox.forkserver import ForkServer, ForkServerError, ServerLauncher
from supervisor.sandbox.protocol import (
    ChildError,
    EnterRequest,
    Exited,
    PidReport,
    ProtocolError,
    decode,
)

log = get_logger()
SUBGROUP = "sandboxd-probe"
OUTPUT_KEEP = 2048  # bytes of probe output kept (the rest is read and dropped)
REPORT_MAX = 8192  # bytes of report read (three short JSON lines)
# The server kills the command at `timeout`; past this much more, something is stuck (an
# unkillable command, a server too busy to answer): give up on the report.
REPORT_GRACE = 5.0
SERVER_REPLY_TIMEOUT = 5.0


class ProbeCgroup:
    """`<unit cgroup>/sandboxd-probe` in each of the unit's hierarchies."""

    def __init__(self, unit: UnitCgroup) -> None:
        self.dirs = tuple(os.path.join(os.path.dirname(p), SUBGROUP) for p in unit.procs_files())
        for path in self.dirs:
            files.mkdir(path)
            for name in ("cpuset.cpus", "cpuset.mems"):  # v1 cpuset starts empty: inherit
                mine, parents = os.path.join(path, name), os.path.join(path, "..", name)
                if os.path.exists(mine) and not files.read(mine):
                    files.write(mine, files.read(parents))

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.dirs:
            with contextlib.suppress(CgroupError, OSError):
                found.update(files.read_pids(os.path.join(path, "cgroup.procs")))
        return sorted(found)

    def _set(self, name: str, values: tuple[str, str], frozen: bool) -> None:
        for path in self.dirs:
            if os.path.exists(os.path.join(path, name)):
                files.write(os.path.join(path, name), values[0] if frozen else values[1])

    def kill(self) -> None:
        for path in self.dirs:
            if os.path.exists(os.path.join(path, "cgroup.kill")):
                files.write(os.path.join(path, "cgroup.kill"), 1)
                teardown.wait_until(lambda: not self.pids(), teardown.KILL_TIMEOUT)
                return
        teardown.freeze_and_kill(
            self.dirs[0] if self.dirs else SUBGROUP,
            self.pids,
            lambda: self._freeze(True),
            lambda: self._freeze(False),
        )

    def _freeze(self, frozen: bool) -> None:
        self._set("freezer.state", ("FROZEN", "THAWED"), frozen)
        self._set("cgroup.freeze", ("1", "0"), frozen)

    def remove(self) -> None:
        if self.pids():
            self.kill()
        for path in self.dirs:
            files.rmdir(path)


@dataclass
class _Job:
    """One probe run in flight: the command and the daemon's ends of its two pipes."""

    command: ServerLauncher | None  # None if the server died before it answered
    report_fd: int
    output_fd: int
    report: bytearray = field(default_factory=bytearray)
    output: bytearray = field(default_factory=bytearray)
    messages: list[PidReport | ChildError | Exited] = field(default_factory=list)  # at the end

    @property
    def exited(self) -> bool:
        """The server reported the command's end (it has reaped it)."""
        return any(isinstance(m, Exited) for m in self.messages)


class ExecProbe:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        unit: str,
        pid: int,
        argv: Sequence[str],
        *,
        cgroup: UnitCgroup | None,
        server: ForkServer | None,
    ) -> None:
        self.loop, self.unit, self.pid, self.argv = loop, unit, pid, list(argv)
        self._unit_cgroup, self._server = cgroup, server
        self._cgroup: ProbeCgroup | None = None
        self._job: _Job | None = None

    async def run(self, timeout: float) -> ProbeResult:
        try:
            job = self._job = self._start(timeout)
        except (LaunchError, ForkServerError) as exc:  # LaunchError names the unit: say less
            return ProbeResult(False, truncate(f"exec: cannot start: {exc.message}"))
        except (OSError, CgroupError) as exc:
            return ProbeResult(False, truncate(f"exec: cannot start: {exc}"))
        reported: asyncio.Future[None] = self.loop.create_future()

        def report_readable() -> None:
            if _collect(job.report_fd, job.report, REPORT_MAX) and not reported.done():
                reported.set_result(None)  # EOF: the server has said all it will

        def output_readable() -> None:
            if _collect(job.output_fd, job.output, OUTPUT_KEEP):
                self.loop.remove_reader(job.output_fd)  # EOF before the report: stop polling

        self.loop.add_reader(job.report_fd, report_readable)
        self.loop.add_reader(job.output_fd, output_readable)
        stuck = False
        try:
            async with asyncio.timeout(timeout + REPORT_GRACE):
                await reported
        except TimeoutError:
            stuck = True
        finally:
            self._finish(job)
        if stuck:
            why = f"the probe did not end within {timeout + REPORT_GRACE:g}s, even killed"
            return ProbeResult(False, truncate(f"{why}; output: {_text(job.output)}"))
        if not job.exited:
            # EOF with no verdict: the fork server died while the command ran.
            log.warning("health.probe_server_lost", unit=self.unit,
                        reported=[type(m).__name__ for m in job.messages])  # fmt: skip
        return _verdict(job.messages, timeout, _text(job.output))

    def _start(self, timeout: float) -> _Job:
        if self._server is None:
            raise OSError("exec probes need the daemon's fork server, and there is none")
        if self._unit_cgroup is None:
            raise OSError("the unit has no cgroup to run the probe in")
        if self._cgroup is None:
            self._cgroup = ProbeCgroup(self._unit_cgroup)
        request = EnterRequest(self.pid, self.argv, list(self._cgroup.dirs), timeout)
        bpf = seccomp.default_bpf()  # compiled once; loaded only if PID 1 runs under it
        report_r, report_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        output_r, output_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        passed = [report_w, output_w]
        try:
            passed.append(os.pidfd_open(self.pid))  # PID 1 is our child: cannot be recycled
            # A dead server is restarted first: its start-up must not eat the answer's time.
            self._server.ensure()
            deadline = time.monotonic() + SERVER_REPLY_TIMEOUT
            command = self._server.enter(self.unit, request, bpf, passed, deadline)
        except BaseException:
            os.close(report_r)
            os.close(output_r)
            raise
        finally:
            for fd in passed:  # the server has its own copies now
                os.close(fd)
        return _Job(command, report_r, output_r)

    def _finish(self, job: _Job) -> None:
        """Stop reading, take what is there, kill what is left of the probe, close."""
        if self._job is not job:  # close() got there first
            return
        self._job = None
        for fd in (job.report_fd, job.output_fd):
            self.loop.remove_reader(fd)
        _collect(job.report_fd, job.report, REPORT_MAX)
        _collect(job.output_fd, job.output, OUTPUT_KEEP)
        self._kill_leftovers()
        os.close(job.output_fd)
        os.close(job.report_fd)  # the server, if it writes later, gets EPIPE and goes on
        job.messages = _messages(job.report)
        if job.command is None:
            return
        if job.exited:
            job.command.close()  # reaped by the server
        else:  # the server died, or we gave up: the command may become ours to reap
            _reap_orphan_later(self.loop, job.command, self._server)

    def _kill_leftovers(self) -> None:
        if self._cgroup is not None and self._cgroup.pids():
            with contextlib.suppress(CgroupError, OSError):
                self._cgroup.kill()

    def close(self) -> None:
        if self._job is not None:
            self._finish(self._job)
        if self._cgroup is not None:
            with contextlib.suppress(CgroupError, OSError):
                self._cgroup.remove()
            self._cgroup = None


def _messages(report: bytes | bytearray) -> list[PidReport | ChildError | Exited]:
    found = []
    for line in bytes(report).splitlines():
        with contextlib.suppress(ProtocolError):
            found.append(decode(line))
    return found


def _verdict(
    messages: list[PidReport | ChildError | Exited], timeout: float, text: str
) -> ProbeResult:
    for msg in messages:
        if isinstance(msg, Exited):
            if msg.timed_out:
                why = f"timed out after {timeout:g}s, killed with its process tree"
                return ProbeResult(False, truncate(f"{why}; output: {text}"))
            code = os.waitstatus_to_exitcode(msg.status)
            if code == 0:
                return ProbeResult(True, truncate(text))
            how = f"exit code {code}" if code >= 0 else f"signal {-code}"
            return ProbeResult(False, truncate(f"{how}: {text}" if text else how))
    return ProbeResult(False, truncate(f"exec: the fork server died while the probe ran; {text}"))


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


def _text(output: bytearray) -> str:
    return output.decode("utf-8", errors="replace").strip()


ORPHAN_CHECKS = 50  # every 0.1 s: how long a dying server may take to hand its children over


def _reap_orphan_later(
    loop: asyncio.AbstractEventLoop, command: ServerLauncher, server: ForkServer | None
) -> None:
    """The fork server died while the command ran (or the daemon gave up waiting): a command
    outliving its server re-parents to us, the daemon being a child subreaper. ProbeCgroup's
    kill has ended it (or will, when the run ends); once it has, reap it if it is ours. While
    the server lives, the command is the server's to reap."""
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
            if checks > 0 and server is not None and not server.alive():
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
