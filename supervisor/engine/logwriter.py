"""The daemon's one thread besides the loop: it moves service output into log files.

A write to a regular file cannot be made non-blocking: O_NONBLOCK does not apply to regular
files, and a filesystem whose writes stall (a hung NFS server, a dying disk, a FUSE daemon)
keeps the writer in the kernel for as long as it stalls. Made on the loop, such a write froze
supervision with it: `status`, exits, OOM kills. So every log-file operation (open, rotate,
splice, the dropped-bytes line) runs here, one job at a time in submission order (so a log's
jobs never overlap or reorder), and the loop learns each result through
`call_soon_threadsafe` (asyncio's self-pipe). A job only moves bytes and touches no engine
state; the one thing it shares with the loop is an output pipe, under that pipe's lock
(linux/pipes.OutputPipe). One thread for all units, not one per unit: the log dir is one
filesystem, and a stall there stalls every writer into it anyway; the loop stops waiting for
a stuck one after output.STALL_AFTER and drops that unit's output instead.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger("sandboxd.output")


FDS = 2  # the thread's staging pipe (output.RotatingLog.take): once per daemon, not per unit


class LogWriter:
    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        # (read end, write end) of the pipe the thread stages output in; only its jobs use it.
        self.spare: tuple[int, int] | None = None

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job` on the writer thread after every job submitted before it."""
        with self._start:
            if self._thread is None:
                # A daemon thread: a process exiting while a write is stuck must not wait for
                # it (what the write had taken is still in the service's pipe).
                self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the jobs submitted so far; False if they are still
        running (a stalled filesystem): the caller goes on without them."""
        if self._thread is None:
            return True
        done = threading.Event()
        self.submit(done.set)
        return done.wait(timeout)

    def stop(self, timeout: float) -> bool:
        """End the thread after the jobs submitted so far (a later `submit` starts another);
        False if it is still busy after `timeout` seconds. For tests that run Captures in a
        process that then forks directly (launch.py refuses to fork with a second thread)."""
        with self._start:
            thread, self._thread = self._thread, None
            if thread is None:
                return True
            self._jobs.put(None)
        thread.join(timeout)
        return not thread.is_alive()

    def _run(self) -> None:
        self.spare = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            while (job := self._jobs.get()) is not None:
                try:
                    job()
                except Exception:  # a bug in one job must not stop every unit's logging
                    log.exception("output.writer_failed")
        finally:
            spare, self.spare = self.spare, None
            for fd in spare:
                os.close(fd)


# The daemon's writer. Module-level because a log dir is the daemon's, not a unit's, and every
# Capture must queue behind the same thread for a log's jobs to stay in order.
WRITER = LogWriter()
