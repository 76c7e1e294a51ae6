"""An exec health probe's runner: a fork server's spare launcher that runs one command inside a
running sandbox, waits for it and reports how it ended (protocol.py, EnterRequest).

Why here and not in the daemon: forking the daemon (~60 MB, page tables copied at fork and torn
down at exit) for every probe of every unit saturated its event loop at 100 units probing each
second. A spare launcher is a fork of the small fork server that is already made, and it does
the waiting itself, so the daemon only reads two pipes.

Entering is `sandboxctl exec`'s (enter.py): PID 1's namespaces, root, cwd, uid/gid,
capabilities, no_new_privs, seccomp and environment, read from /proc while a pidfd of PID 1
(passed by the daemon) proves it is still the same process; the command joins the probe
sub-cgroup the daemon made instead of PID 1's cgroups. Its stdin is /dev/null, its stdout and
stderr the daemon's output pipe.

The runner stays the command's parent, so the command is never re-parented to the daemon and
the daemon never reaps it: after `timeout` the runner SIGKILLs it and reaps it, then reports.
The rest of the command's tree (double forks, daemons) is the daemon's to kill, through the
probe sub-cgroup, once the report arrives.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import replace
from typing import NoReturn

from supervisor.linux.syscalls import NAMESPACE_FLAGS, Syscalls
from supervisor.sandbox import enter
from supervisor.sandbox.frames import wait_readable
from supervisor.sandbox.protocol import ChildError, EnterRequest, Exited, Message, PidReport, encode

STAGE = "enter"
WHO = "health probe"  # the first words of a line the command's stderr gets if entering fails


def _report(fd: int, msg: Message) -> None:
    with contextlib.suppress(OSError):  # the daemon stopped listening: nobody left to tell
        os.write(fd, encode(msg))


def run_probe(req: EnterRequest, bpf: bytes, fds: Sequence[int], sys: Syscalls) -> NoReturn:
    """Enter, fork the command, wait at most `req.timeout`, report; never returns.
    `fds`: the report pipe, the output pipe, a pidfd of the sandbox's PID 1 (the server
    checked there are three)."""
    report, output, pid1_fd = fds
    # A daemon that closed the report pipe must not kill us with SIGPIPE before we reaped.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        target = replace(enter.inspect(req.pid), cgroup_dirs=tuple(req.cgroup_dirs))
        if not enter.alive(pid1_fd):
            raise enter.EnterError(f"process {req.pid} ended while entering its sandbox")
        prep = enter.prepare(target, pid1_fd, bpf)
        if target.clone_flags & NAMESPACE_FLAGS["pid"]:
            sys.setns(prep.pid_ns, NAMESPACE_FLAGS["pid"])  # for the command only
        devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        command = sys.fork()
        if command == 0:
            try:
                signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as any program expects it
                os.dup2(devnull, 0)
                os.dup2(output, 1)
                os.dup2(output, 2)
                enter.child(target, prep, req.argv, target.env, sys, who=WHO)
            finally:
                os._exit(enter.EXIT_CANNOT_ENTER)
        command_fd = os.pidfd_open(command)  # our unreaped child: cannot be another process
    except enter.EnterError as err:
        _report(report, ChildError(STAGE, 0, str(err)))
        os._exit(1)
    except OSError as err:
        what = f"{err.filename}: " if err.filename else ""
        _report(report, ChildError(STAGE, err.errno or 0, f"{what}{err.strerror or err}"))
        os._exit(1)
    _report(report, PidReport(command))
    timed_out = not wait_readable(command_fd, req.timeout)
    if timed_out:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(command_fd, signal.SIGKILL)
    _, status = os.waitpid(command, 0)
    _report(report, Exited(status, timed_out))
    os._exit(0)
