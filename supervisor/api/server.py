"""Serve the control API on the daemon's Unix socket.

`serve(controller, config)` binds `config.socket_path` with mode 0660 and the configured group
(when the host has it), and returns a `Server` whose `close()` stops accepting, ends streaming
responses and removes the socket. aiohttp parses HTTP; this module only wires it up.

The daemon's server also keeps the event stream's memory (events.py: numbered events for
`?since=` and `?replay=`), fed by one task for the server's lifetime. A server made with
`serve_on` alone (tests, over a fake controller) streams live events only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from supervisor.api import auth, routes, validation
from supervisor.api.errors import json_errors
from supervisor.api.events import EventLog
from supervisor.api.logreaders import LogReaders
from supervisor.api.metrics import METRICS_KEY, Metrics, handle_metrics
from supervisor.api.openapi import document
from supervisor.config import DaemonConfig
from supervisor.engine.model import Controller
from supervisor.errors import SupervisorError

log = structlog.get_logger("sandboxd.api")

SOCKET_MODE = 0o660
MAX_BODY = 64 * 1024  # no endpoint takes more than an empty JSON object
BACKLOG = 512
SHUTDOWN_TIMEOUT = 2.0


class SocketInUse(SupervisorError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"{path}: another sandboxd is already listening on this socket")


def make_app(
    controller: Controller,
    policy: auth.Policy,
    metrics: Metrics,
    event_log: EventLog | None = None,
    *,
    first: Sequence[Middleware] = (),
    log_readers: Executor | None = None,
) -> web.Application:
    spec = document()
    app = web.Application(
        middlewares=[*first, json_errors, auth.middleware(policy), validation.middleware(spec)],
        client_max_size=MAX_BODY,
    )
    app[routes.CONTROLLER_KEY] = controller
    app[METRICS_KEY] = metrics
    if event_log is not None:
        app[routes.EVENT_LOG_KEY] = event_log
    if log_readers is not None:
        app[routes.LOG_READERS_KEY] = log_readers
    routes.add_routes(app)

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(spec)

    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/metrics", handle_metrics)
    return app


def _remove_stale(path: Path) -> None:
    """Unlink a socket left by a dead daemon; refuse to steal one a live daemon answers on."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SupervisorError(f"{path}: exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise SupervisorError(f"{path}: cannot probe the old socket: {exc.strerror}") from None
    else:
        raise SocketInUse(path)
    finally:
        probe.close()
    path.unlink(missing_ok=True)


_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class ListeningSocket(socket.socket):
    """A listening socket whose accept() fails at most once per event loop round.

    asyncio's accept loop (Python 3.11, selector_events._accept_connection) goes on calling
    accept() up to `backlog` times after one has failed with EMFILE, scheduling a retry and
    reporting an error for each: 512 failed syscalls and reports every second, for as long as
    the daemon is out of fds. Here the calls after the first failure in a round say "nothing
    to accept", which ends that loop; asyncio's one retry a second stays.
    """

    _resting = False

    def accept(self) -> tuple[socket.socket, Any]:
        if self._resting:
            raise BlockingIOError(errno.EAGAIN, "resting after a failed accept")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno in _OUT_OF_RESOURCES:
                self._resting = True
                asyncio.get_running_loop().call_soon(self._rest_over)
            raise

    def _rest_over(self) -> None:
        self._resting = False


def bind_socket(path: Path, gid: int | None, mode: int = SOCKET_MODE) -> socket.socket:
    """A listening socket at `path` that never exists with a wider mode than `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    sock = ListeningSocket(socket.AF_UNIX, socket.SOCK_STREAM)
    # A temporary umask affects no one else: the loop is the daemon's only thread but the log
    # writer (engine/logwriter.py), which creates only log files, whose mode it sets with
    # fchmod (safefs.open_owned), and the log dir, which daemondirs made before the API binds.
    # Without it the socket would exist briefly with the inherited umask's wider mode.
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise SupervisorError(f"{path}: cannot bind the control socket: {exc.strerror}") from None
    finally:
        os.umask(old)
    try:
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        path.unlink(missing_ok=True)
        raise SupervisorError(f"{path}: cannot set up the control socket: {exc}") from None
    return sock


# asyncio's words when accept() fails with EMFILE, ENFILE, ENOBUFS or ENOMEM: it then stops
# reading the listening socket for a second and tries again (never spinning, never closing
# it), and reports each failed try to the loop's exception handler.
_ACCEPT_FAILED = "socket.accept() out of system resource"


class AcceptWatch:
    """Turn asyncio's report of a failed accept (by default a traceback on stderr every
    second for as long as it lasts) into one `api.accept_paused` warning per episode, and
    `api.accept_resumed` at the first request served after it. Other reports go on to the
    handler that was there before."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._previous = loop, loop.get_exception_handler()
        self.failed = 0  # accepts that failed in this episode
        loop.set_exception_handler(self._handle)

    def _handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != _ACCEPT_FAILED:
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.failed += 1
        if self.failed == 1:
            exc = context.get("exception")
            error = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.warning("api.accept_paused", error=error,
                        detail="no new API connection until descriptors free up; "
                        "retried every second")  # fmt: skip

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.failed:
            log.info("api.accept_resumed", failed_accepts=self.failed)
            self.failed = 0
        return await handler(request)

    def close(self) -> None:
        self._loop.set_exception_handler(self._previous)


class Server:
    def __init__(
        self,
        runner: web.AppRunner,
        path: Path,
        sock: socket.socket,
        feeder: asyncio.Task[None] | None = None,
        watch: AcceptWatch | None = None,
    ) -> None:
        self._runner, self.path, self._sock, self._feeder = runner, path, sock, feeder
        self._watch = watch

    @property
    def metrics(self) -> Metrics:
        return self._runner.app[METRICS_KEY]

    async def close(self) -> None:
        try:
            await self._runner.cleanup()
            await _cancel(self._feeder)
        finally:
            self._sock.close()
            if self._watch is not None:
                self._watch.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            log.info("api.closed", socket=str(self.path))


async def serve_on(
    controller: Controller,
    path: Path,
    policy: auth.Policy,
    metrics: Metrics | None = None,
    mode: int = SOCKET_MODE,
    *,
    event_log: EventLog | None = None,
    log_readers: Executor | None = None,
) -> Server:
    metrics = metrics or Metrics()
    metrics.bind(controller)
    watch = AcceptWatch(asyncio.get_running_loop())
    app = make_app(controller, policy, metrics, event_log, first=[watch.middleware],
                   log_readers=log_readers)  # fmt: skip
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=True,  # a vanished client ends its stream's handler
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    feeder = None
    if event_log is not None:
        feeder = asyncio.get_running_loop().create_task(event_log.feed(controller))
        await asyncio.sleep(0)  # its first step: seeded and subscribed before any client
    try:
        await runner.setup()
        sock = bind_socket(path, policy.group_gid, mode)
    except BaseException:
        watch.close()
        await _cancel(feeder)
        raise
    try:
        await web.SockSite(runner, sock, backlog=BACKLOG).start()
    except BaseException:
        watch.close()
        await runner.cleanup()
        await _cancel(feeder)
        sock.close()
        path.unlink(missing_ok=True)
        raise
    log.info("api.listening", socket=str(path), group_gid=policy.group_gid)
    return Server(runner, path, sock, feeder, watch)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:  # it died earlier: say so rather than fail the shutdown
        log.exception("api.events_failed")


async def serve(
    controller: Controller, config: DaemonConfig, metrics: Metrics | None = None
) -> Server:
    """The daemon's entry point to the API: listen on `config.socket_path` until `close()`."""
    policy = auth.Policy.for_group(config.group)
    if policy.group_gid is None:
        # Not a fault: a host without the group simply has no read-only users, so this is said
        # once per start at info level, with what to do if read-only access is wanted.
        log.info(
            "api.no_group",
            group=config.group,
            detail=f"no group {config.group!r}: only root can use the socket; to let members"
            f" read status and logs, create it (groupadd --system {config.group}) and restart",
        )
    return await serve_on(controller, config.socket_path, policy, metrics, event_log=EventLog(),
                          log_readers=LogReaders())  # fmt: skip
