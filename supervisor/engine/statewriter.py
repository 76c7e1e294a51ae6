"""The daemon's second thread besides the loop: it writes unit state records to the state dir.

A state save is an open, a write, an fsync and a rename (store.py). On a filesystem whose writes
stall (a hung NFS server, a dying disk, a FUSE daemon) each of them can keep the caller in the
kernel for as long as the stall lasts, and O_NONBLOCK does nothing for regular files: made on
the loop, one save froze supervision with it. So the loop only hands records over and goes on.

Why not the log writer thread (logwriter.py): the log dir and the state dir are often different
filesystems, and a stall in one must not hold the other; and the log writer's jobs form an
unbounded stream (output), where state jobs coalesce.

Coalescing is what keeps this bounded without ever refusing a save: at most one job waits per
key (a unit's file), and a newer one replaces it in place (latest wins; the older record would
be overwritten at once anyway). So the queue never holds more than one record per unit however
long the disk stalls, a key's jobs run in the order they were submitted and never two at once,
and a unit saved often does not push the others back in line.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Hashable

import structlog

log = structlog.get_logger("sandboxd.store")


class StateWriter:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[Hashable, Callable[[], None]] = {}  # in line, one job per key
        self._busy: set[Hashable] = set()  # keys whose job is running now
        self._thread: threading.Thread | None = None

    def submit(self, key: Hashable, job: Callable[[], None]) -> bool:
        """Run `job` on the writer thread after the job of `key` that is running, if any. A job
        of `key` still waiting is dropped for it (True is returned then)."""
        with self._cond:
            replaced = key in self._pending
            self._pending[key] = job  # a replaced key keeps its place in line
            if self._thread is None:
                # A daemon thread: a process exiting while a write is stuck must not wait for it
                # past the bounded flush (the previous record is still whole on disk).
                thread = threading.Thread(target=self._run, name="state-writer", daemon=True)
                self._thread = thread
                thread.start()
            self._cond.notify_all()
        return replaced

    def pending(self) -> int:
        """Jobs waiting or running."""
        with self._cond:
            return len(self._pending) + len(self._busy)

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the jobs submitted so far and those replacing them;
        False if some are still waiting or running (a stalled filesystem)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def stop(self, timeout: float) -> bool:
        """Run what was submitted, then end the thread (a later `submit` starts another); False
        if it is still busy after `timeout` seconds. For tests, which fork the pytest process
        directly afterwards (launch.py refuses to fork with a second thread)."""
        flushed = self.flush(timeout)
        with self._cond:
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is None:
            return flushed
        thread.join(timeout if flushed else 0)
        return flushed and not thread.is_alive()

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._thread is not me or self._ready() is not None)
                key = self._ready()
                if self._thread is not me or key is None:
                    return  # stopped: a later thread, if any, takes what is left
                job = self._pending.pop(key)
                self._busy.add(key)
            try:
                job()
            except Exception:  # a bug in one job must not stop every unit's saves
                log.exception("store.writer_failed")
            finally:
                with self._cond:
                    self._busy.discard(key)
                    self._cond.notify_all()

    def _ready(self) -> Hashable | None:
        # The first key in line whose previous job is not still running (only a thread that
        # `stop` gave up on can still be running one), so a key's jobs never overlap.
        return next((key for key in self._pending if key not in self._busy), None)


# The daemon's writer, module-level like logwriter.WRITER: every Store queues behind it, and
# the daemon's exit (daemon.main) and the tests' teardown reach it without a reference.
WRITER = StateWriter()


_calls = itertools.count()


async def run_on(writer: StateWriter, job: Callable[[], None]) -> None:
    """Run `job` on `writer`'s thread and wait for it without holding the loop; its exception,
    if any, is raised here. For a write an API answer depends on (a transient unit's file)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def wrapped() -> None:
        try:
            job()
        except Exception as exc:  # handed to the awaiting coroutine, not logged as a bug
            loop.call_soon_threadsafe(settle, exc)
        else:
            loop.call_soon_threadsafe(settle, None)

    # A key of its own: a job that a later one replaced would never settle its future.
    writer.submit(("call", next(_calls)), wrapped)
    await done
