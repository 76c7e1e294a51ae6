"""The threads `GET /v1/units/{name}/logs` reads log files on, so that a log disk whose reads
stall (a hung NFS server, a dying drive) holds a reader, never the daemon's event loop: a read
of a regular file cannot be made non-blocking (O_NONBLOCK does not apply to it).

At most a few daemon threads, each ending when idle for a while: requests beyond that wait in
the queue (a stalled disk then stalls log requests, nothing else), and, unlike
ThreadPoolExecutor's workers, which the interpreter joins at exit, a thread stuck in a read
never holds up the daemon's exit. The threads touch nothing of the engine: only the files of
the one request each step belongs to (logtail.LogReader).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
WORKERS = 4
IDLE_SECONDS = 30.0  # a thread with nothing to read for this long ends
_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class LogReaders(Executor):
    def __init__(self, workers: int = WORKERS) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.workers = workers
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((future, fn, args, kwargs))
        with self._lock:  # started on first use: a daemon nobody asks for logs has none
            if len(self._threads) < self.workers:
                thread = threading.Thread(target=self._run, name="log-reader", daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def _run(self) -> None:
        while True:
            try:
                future, fn, args, kwargs = self._jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:  # submit() puts first, then counts threads under the lock
                    if self._jobs.empty():
                        self._threads.remove(threading.current_thread())
                        return
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the awaiting request
                future.set_exception(exc)
            else:
                future.set_result(result)
