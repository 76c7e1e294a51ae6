"""Process identity and exit status through pidfds: how the daemon watches a service's PID 1.

A PID alone is not an identity (PIDs are reused), so a service is known by its PID plus the
`starttime` field of /proc/<pid>/stat, and watched through a pidfd, which always refers to the
process it was opened for. Exit statuses come from `waitpid(pid)` for our own children only
(no waitpid(-1), no asyncio child watcher: a blind reap would steal the status of a
process someone else in the daemon waits for). A service re-adopted after a daemon
restart is no longer our child (it was reparented to init), so its status comes from
PIDFD_GET_INFO with PIDFD_INFO_EXIT (Linux 6.15+), which keeps the status for holders of a pidfd
once the real parent has reaped it; on older kernels the status is unknown.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import time

# <linux/pidfd.h>: struct pidfd_info, first published size (64 bytes, exit_code at offset 60).
_PIDFD_INFO_SIZE = 64
_PIDFD_INFO_EXIT = 1 << 3
_PIDFD_GET_INFO = (3 << 30) | (_PIDFD_INFO_SIZE << 16) | (0xFF << 8) | 11
_EXIT_CODE_OFFSET = 60


def _stat(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat from field 3 (state) on; None if there is no such PID."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ")".
    return stat[stat.rindex(b")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks after boot); None if there is no such PID."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def seconds_since_start(pid_start: int) -> float | None:
    """How long ago a process with this `starttime` (start_time()) started, on the boot clock,
    which no wall-clock step moves; None if that is in the future (a record from an earlier
    boot)."""
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - pid_start / os.sysconf("SC_CLK_TCK")
    return age if age >= 0 else None


def is_running(pid: int, expected_start: int) -> bool:
    """`pid` is still the process that started at `expected_start`, and has not exited (a
    zombie whose parent has not reaped it yet has ended)."""
    fields = _stat(pid)
    if fields is None or fields[0] in (b"Z", b"X"):
        return False
    return int(fields[19]) == expected_start


def open_pidfd(pid: int, expected_start: int | None = None) -> int | None:
    """A pidfd for `pid`, or None if it is gone or (given `expected_start`) has ended or is
    another process.

    The start time is checked after opening, so the pidfd cannot refer to a successor that
    reused the PID between the check and the open.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    if expected_start is not None and not is_running(pid, expected_start):
        os.close(fd)
        return None
    return fd


def reap(pid: int) -> int | None:
    """The wait status of our own exited child `pid`, or None if it is not our child."""
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return status if got == pid else None


def exit_status_from_pidfd(pidfd: int) -> int | None:
    """The wait status kept by the kernel for a reaped process, or None (not reaped yet, or a
    kernel without PIDFD_INFO_EXIT)."""
    buf = bytearray(struct.pack("=Q", _PIDFD_INFO_EXIT) + bytes(_PIDFD_INFO_SIZE - 8))
    try:
        fcntl.ioctl(pidfd, _PIDFD_GET_INFO, buf, True)
    except OSError:
        return None
    (mask,) = struct.unpack_from("=Q", buf, 0)
    if not mask & _PIDFD_INFO_EXIT:
        return None
    (status,) = struct.unpack_from("=i", buf, _EXIT_CODE_OFFSET)
    return int(status)


def send_signal(pidfd: int, signum: int) -> bool:
    """Signal through the pidfd (never a reused PID); False if the process is already gone."""
    try:
        signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:
        return False
    return True


def kill_and_reap(pid: int) -> None:
    """SIGKILL and reap our own unreaped child `pid` (a PID 1 that failed or was aborted before
    exec). Safe by PID only because an unreaped child's PID cannot be reused."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
