"""Exec health probes, the fork server's side (wire/protocol.py, EnterRequest).

Why the fork server and not the daemon: forking the daemon (~60 MB; page tables copied at fork,
copy-on-write faults as Python touches its objects, teardown at exit) for every probe of every
unit saturated its event loop at 100 units probing each second.

The server does the preparation itself (Python work in a process that stays, instead of in a
fresh fork that pays a copy-on-write fault for every page it touches), enters the sandbox's PID
namespace for its next child only, forks the command there (the only fork per probe) and comes
back to its own PID namespace. The command is the server's child: the server watches its pidfd
with its launchers', SIGKILLs it at the deadline, reaps it and reports on the daemon's pipe.
The rest of the command's tree (double forks, daemons) is the daemon's to kill, through the
probe sub-cgroup the command joined, once the report arrives.

Entering is `sandboxctl exec`'s (child/enter.py): PID 1's namespaces, root, cwd, uid/gid,
capabilities, no_new_privs, seccomp and environment, read from /proc while a pidfd of PID 1
(passed by the daemon) proves it is still the same process; the command joins the probe
sub-cgroup instead of PID 1's cgroups. Its stdin is /dev/null, its stdout and stderr the
daemon's output pipe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NoReturn

from supervisor.linux.syscalls import NAMESPACE_FLAGS, Syscalls
from supervisor.sandbox.child import enter
from supervisor.sandbox.wire.protocol import EnterRequest, Exited, Message, PidReport, encode

WHO = "health probe"  # the first words of a line the command's stderr gets if entering fails
_PID_NS = NAMESPACE_FLAGS["pid"]


@dataclass
class RunningProbe:
    """A probe command the server forked and watches."""

    pid: int
    pidfd: int
    report: int  # the daemon's report pipe (write end)
    deadline: float  # monotonic
    timed_out: bool = False


def _report(fd: int, msg: Message) -> None:
    with contextlib.suppress(OSError):  # the daemon stopped listening: nobody left to tell
        os.write(fd, encode(msg))


def start(
    req: EnterRequest, bpf: bytes, fds: Sequence[int], own_pid_ns: int, sys: Syscalls
) -> RunningProbe:
    """Enter the sandbox and fork the command; raises EnterError or OSError if it could not be
    forked. `fds` (the report pipe, the output pipe, a pidfd of PID 1) are the caller's no
    longer: all closed here, but for the report pipe of a probe that runs."""
    report, output, pid1_fd = fds
    try:
        target = replace(enter.inspect(req.pid), cgroup_dirs=tuple(req.cgroup_dirs))
        if not enter.alive(pid1_fd):
            raise enter.EnterError(f"process {req.pid} ended while entering its sandbox")
        prep = enter.prepare(target, pid1_fd, bpf)
        try:
            command = _fork_inside(target, prep, req, output, own_pid_ns=own_pid_ns, sys=sys)
        finally:
            for fd in (prep.pid_ns, prep.root, prep.cwd, *prep.procs):
                os.close(fd)
        pidfd = os.pidfd_open(command)  # our unreaped child: cannot be another process
    except BaseException:
        os.close(report)
        raise
    finally:
        os.close(output)
        os.close(pid1_fd)
    _report(report, PidReport(command))
    return RunningProbe(command, pidfd, report, time.monotonic() + req.timeout)


def _fork_inside(
    target: enter.Target,
    prep: enter.Prepared,
    req: EnterRequest,
    output: int,
    *,
    own_pid_ns: int,
    sys: Syscalls,
) -> int:
    """Fork the command in the sandbox's PID namespace; the server stays in its own."""
    in_pid_ns = bool(target.clone_flags & _PID_NS)
    devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)  # before the command's chroot
    try:
        if in_pid_ns:
            sys.setns(prep.pid_ns, _PID_NS)  # for the next child only
        try:
            command = sys.fork()
            if command == 0:
                _command_main(target, prep, req, (devnull, output, output), sys)
        finally:
            if in_pid_ns:
                sys.setns(own_pid_ns, _PID_NS)  # back: the next spare launcher is ours
    finally:
        os.close(devnull)
    return command


def _command_main(
    target: enter.Target,
    prep: enter.Prepared,
    req: EnterRequest,
    stdio: tuple[int, int, int],
    sys: Syscalls,
) -> NoReturn:
    """The command, after fork: signals and stdio as a program expects them, then child/enter.py's
    child path (exec, or _exit with a line on stderr)."""
    try:
        sys.reset_signals()
        for target_fd, fd in enumerate(stdio):
            os.dup2(fd, target_fd)
        enter.child(target, prep, req.argv, target.env, sys, who=WHO)
    finally:
        os._exit(enter.EXIT_CANNOT_ENTER)


def expire(probe: RunningProbe) -> None:
    """Its deadline passed: SIGKILL it (its exit is reported when its pidfd says so)."""
    probe.timed_out = True
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(probe.pidfd, signal.SIGKILL)


def finish(probe: RunningProbe) -> None:
    """It exited: reap it, report how, close its fds."""
    _, status = os.waitpid(probe.pid, 0)
    _report(probe.report, Exited(status, probe.timed_out))
    os.close(probe.report)
    os.close(probe.pidfd)
