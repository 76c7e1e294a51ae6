"""Waiting for a child process from the daemon's event loop, without a thread or a blind reap.

Why not asyncio.create_subprocess_exec: it needs asyncio's child watcher, and the daemon reaps
only its own children by PID (a blind reap would take the status of a process another part of
the daemon waits for). So callers spawn with subprocess.Popen (vfork and exec, no thread), and
this waits for the exit on the loop through a pidfd and reaps exactly that PID. Used for nft(8)
(nftables.py) and the image unpack helper (sandbox/host/imagefetch.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess


async def wait_child(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The child's return code once it has exited, without blocking the loop; None after a
    timeout. Timed out or cancelled, the child is killed and reaped in the background."""
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(proc.pid)  # our unreaped child: the PID cannot be reused
    exited = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        async with asyncio.timeout(timeout):
            await exited
    except BaseException as exc:
        loop.remove_reader(pidfd)
        _kill_and_reap_later(loop, proc, pidfd)
        if isinstance(exc, TimeoutError):
            return None
        raise
    loop.remove_reader(pidfd)
    os.close(pidfd)
    return proc.wait()  # it has exited (the pidfd said so): this does not block


def _kill_and_reap_later(
    loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes], pidfd: int
) -> None:
    """SIGKILL it and reap it once it is gone, off the caller's path (a process killed in
    the middle of a kernel call may take a moment to die). Takes
    `pidfd` over."""
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)

    def reap() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        proc.wait()

    try:
        loop.add_reader(pidfd, reap)
    except RuntimeError:  # the loop is closing: the daemon exits, its parent reaps
        os.close(pidfd)
