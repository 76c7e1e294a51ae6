"""The `/v1/` handlers: thin adapters from HTTP to the engine's `Controller`.

Handlers never block the loop: reads are synchronous snapshots, actions are awaited. An action
is shielded from the client going away, so a vanished client can not leave a reload or a stop
half done.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, cast

from aiohttp import web

from supervisor.api.events import EventLog
from supervisor.api.validation import BODY, QUERY
from supervisor.engine.model import Controller
from supervisor.logtail import read_log

CONTROLLER_KEY = web.AppKey("controller", Controller)
EVENT_LOG_KEY = web.AppKey("event_log", EventLog)
ACTIONS = ("start", "stop", "restart")
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
# Where log files are read: the daemon's log-reader threads (api/logreaders.py: never on the
# loop, a log disk may stall); without one (in-process test servers) on the loop itself.
LOG_READERS_KEY = web.AppKey("log_readers", Executor)


def _controller(request: web.Request) -> Controller:
    return request.app[CONTROLLER_KEY]


async def list_units(request: web.Request) -> web.Response:
    return web.json_response(text=_controller(request).list_text())


async def top(request: web.Request) -> web.Response:
    return web.json_response(_controller(request).top().to_json())


async def get_unit(request: web.Request) -> web.Response:
    status = _controller(request).get_unit(request.match_info["name"])
    return web.json_response(status.to_json(detail=True))


async def reload(request: web.Request) -> web.Response:
    result = await asyncio.shield(_controller(request).reload())
    return web.json_response(result.to_json())


async def list_images(request: web.Request) -> web.Response:
    return web.json_response(await _controller(request).images())


async def prune_images(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.shield(_controller(request).prune_images()))


def unit_action(verb: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        controller, name = _controller(request), request.match_info["name"]
        controller.get_unit(name)  # 404 before anything happens
        call = {"start": controller.start, "stop": controller.stop, "restart": controller.restart}
        status = await asyncio.shield(call[verb](name))
        return web.json_response(status.to_json(detail=True))

    return handle


async def create_unit(request: web.Request) -> web.Response:
    body = _body(request)
    create = _controller(request).create(
        body.get("name"), body["unit"], body.get("remove", False), body.get("start", True)
    )
    seq, status = await asyncio.shield(create)
    return web.json_response({"name": status.name, "seq": seq, "unit": status.to_json(True)})


async def delete_unit(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await asyncio.shield(_controller(request).delete(name))
    return web.json_response({"removed": name})


async def kill_unit(request: web.Request) -> web.Response:
    body = _body(request)
    try:
        signum = signal.Signals[body["signal"]]
    except KeyError:
        raise web.HTTPBadRequest(reason=f"no signal named {body['signal']}") from None
    status = _controller(request).kill(request.match_info["name"], signum)
    return web.json_response(status.to_json(detail=True))


def _body(request: web.Request) -> dict[str, Any]:
    """The body, checked against the OpenAPI document (validation.py): its fields are there."""
    return cast(dict[str, Any], request[BODY])


def _query(request: web.Request) -> dict[str, Any]:
    """The query, checked and typed against the OpenAPI document (validation.py)."""
    return request[QUERY]


async def logs(request: web.Request) -> web.StreamResponse:
    path = _controller(request).log_path(request.match_info["name"])
    query = _query(request)
    lines, follow = query.get("n"), query.get("follow", 0) == 1
    response = web.StreamResponse(headers=STREAM_HEADERS)
    response.content_type = "text/plain"
    response.charset = "utf-8"
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        async for chunk in read_log(path, lines, follow, offload=request.app.get(LOG_READERS_KEY)):
            await response.write(chunk)
    except ConnectionResetError:
        # The client left: aiohttp's finish_response meets the closed transport and ends the
        # answer quietly, where a raised error would be logged with a traceback.
        return response
    await response.write_eof()
    return response


async def events(request: web.Request) -> web.StreamResponse:
    query = _query(request)
    only, since, replay = query.get("unit"), query.get("since"), query.get("replay")
    follow = query.get("follow", 1) == 1
    if only is not None:
        _controller(request).get_unit(only)
    if since is not None and replay is not None:
        raise web.HTTPBadRequest(reason="give since or replay, not both")
    event_log = request.app.get(EVENT_LOG_KEY)
    if event_log is None:
        if since is not None or replay is not None:
            raise web.HTTPBadRequest(reason="this server keeps no event history")
        return await _live_events(request, only, follow)
    # Subscribed before the answer starts: once a client has the headers, it misses nothing.
    subscription = event_log.subscribe(only, since, replay)
    headers = {**STREAM_HEADERS, "X-Event-Epoch": event_log.epoch,
               "X-Event-Seq": str(event_log.newest)}  # fmt: skip
    response: web.StreamResponse | None = None
    try:
        response = await _ndjson_response(request, headers)
        for numbered in subscription.backlog:
            await response.write(_line(numbered.to_json()))
        while follow:
            await response.write(_line((await subscription.next()).to_json()))
    except ConnectionResetError:
        if response is None:
            raise
        return response  # the client left (`run --wait` once it has the exit)
    finally:
        subscription.close()
    await response.write_eof()
    return response


async def _live_events(request: web.Request, only: str | None, follow: bool) -> web.StreamResponse:
    """The stream without a memory of events (a server over a fake controller): live only."""
    response = await _ndjson_response(request, STREAM_HEADERS)
    if follow:
        stream = _controller(request).events()
        try:
            async for event in stream:
                if only is None or event.unit == only:
                    await response.write(_line(event.to_json()))
        except ConnectionResetError:
            return response  # the client left
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()
    await response.write_eof()
    return response


async def _ndjson_response(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(headers=headers)
    response.content_type = "application/x-ndjson"
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode() + b"\n"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/units", list_units)
    app.router.add_post("/v1/units", create_unit)
    app.router.add_get("/v1/units/{name}", get_unit)
    app.router.add_delete("/v1/units/{name}", delete_unit)
    app.router.add_post("/v1/units/{name}/kill", kill_unit)
    app.router.add_get("/v1/top", top)
    app.router.add_post("/v1/reload", reload)
    app.router.add_get("/v1/images", list_images)
    app.router.add_post("/v1/images/prune", prune_images)
    for verb in ACTIONS:
        app.router.add_post(f"/v1/units/{{name}}/{verb}", unit_action(verb))
    app.router.add_get("/v1/units/{name}/logs", logs)
    app.router.add_get("/v1/events", events)
