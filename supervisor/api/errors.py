"""Every error the API answers is JSON: `{"error": "<one lower-case line>", "code": "<slug>"}`.

The router's own 404/405, aiohttp's 413 for a body over `client_max_size` and the handlers'
errors all pass through one middleware, so clients parse a single shape. `code` is stable and
documented in the OpenAPI document; `error` is for people.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from supervisor.errors import InvalidUnit, SupervisorError, UnitNotFound

log = structlog.get_logger("sandboxd.api")

CODES: dict[int, str] = {
    400: "bad-request",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "failed",
    413: "body-too-large",
    415: "unsupported-media-type",
    500: "internal",
}
NO_SUCH_UNIT = "no-such-unit"
INVALID_UNIT = "invalid-unit"  # a transient unit that does not validate (409, with `errors`)


def error_body(message: str, code: str) -> dict[str, Any]:
    return {"error": message, "code": code}


def json_error(status: int, message: str, code: str | None = None) -> web.Response:
    return web.json_response(error_body(message, code or CODES.get(status, "error")), status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except UnitNotFound as exc:
        return json_error(404, str(exc), NO_SUCH_UNIT)
    except InvalidUnit as exc:
        body = {**error_body(f"invalid unit: {exc}", INVALID_UNIT), "errors": exc.errors}
        return web.json_response(body, status=409)
    except SupervisorError as exc:
        return json_error(409, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        response = json_error(exc.status, (exc.reason or "error").lower())
        for name in ("Allow",):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except (ConnectionResetError, TimeoutError):
        raise
    except Exception:  # one broken request must not look like a dead daemon
        log.exception("api.handler_failed", method=request.method, path=request.path)
        return json_error(500, "internal error, see the daemon log")
