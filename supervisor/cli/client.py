"""sandboxctl's side of the control API: blocking HTTP over the daemon's Unix socket.

The standard library's C socket and JSON scanner only (the HTTP is `unixhttp.py`'s, not
http.client's, whose import alone was longer than the rest of a `sandboxctl status`; answers
are read by `jsonread.py` and bodies written by `jsonwrite.py`, not the json package, which
imports `re`), so a verb that only asks the daemon starts fast. Every way the daemon can be out
of reach (no socket, refused, permission, closed mid-answer) becomes `Unreachable`, one line
naming the socket and exit 5; an API error keeps the daemon's message and its code.
"""

from __future__ import annotations

import os
import sys
import time

from supervisor.cli import jsonread, jsonwrite, unixhttp
from supervisor.errors import EXIT_FAILURE, EXIT_NO_SUCH_UNIT, EXIT_UNREACHABLE

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, TypeVar

DEFAULT_SOCKET = "/run/sandboxd/control.sock"
SOCKET_ENV = "SANDBOXD_SOCKET"
READ_TIMEOUT = 30.0
ACTION_TIMEOUT = 600.0  # a stop waits for stop_timeout, a start for start_timeout
CHUNK = 64 * 1024


def socket_path() -> str:
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


class Unreachable(Exception):
    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"cannot reach sandboxd at {path}: {reason}")


class ApiError(Exception):
    """The daemon answered with an error: `code` is the API's stable slug."""

    def __init__(
        self, status: int, code: str, message: str, errors: list[str] | None = None
    ) -> None:
        self.status, self.code, self.message = status, code, message
        self.errors = errors or []  # `invalid-unit`: each problem, `KEY: message`
        super().__init__(message)

    @property
    def exit_code(self) -> int:
        return EXIT_NO_SUCH_UNIT if self.code == "no-such-unit" else EXIT_FAILURE


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied (root or a member of the daemon's group may connect)"
    if isinstance(exc, FileNotFoundError):
        return "no such socket (is sandboxd running?)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is sandboxd running?)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, unixhttp.Closed | ConnectionResetError | BrokenPipeError):
        return "the daemon closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc).lower() or type(exc).__name__


# RFC 3986's unreserved characters; urllib.parse.quote(safe="") keeps the same ones.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(text: str) -> str:
    """`text` percent-encoded as one path segment or query value (urllib.parse costs 4 ms)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


def urlencode(query: dict[str, str]) -> str:
    return "&".join(f"{quote(key)}={quote(value)}" for key, value in query.items())


def unit_path(name: str, *rest: str) -> str:
    return "/".join(["/v1/units", quote(name), *rest])


class Client:
    def __init__(self, path: str | None = None) -> None:
        self.path = path or socket_path()

    def _open(
        self, method: str, url: str, timeout: float | None, body: bytes | None = None
    ) -> unixhttp.Response:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            sock = unixhttp.connect(self.path, timeout)
        except OSError as exc:
            raise Unreachable(self.path, _reason(exc)) from None
        try:
            response = unixhttp.request(sock, method, url, headers, body)
        except (OSError, unixhttp.ProtocolError) as exc:
            sock.close()
            raise Unreachable(self.path, _reason(exc)) from None
        if response.status >= 400:
            try:
                raise _api_error(response)
            finally:
                response.close()
        return response

    def request(
        self,
        method: str,
        url: str,
        timeout: float | None = READ_TIMEOUT,
        body: dict[str, Any] | None = None,
    ) -> Any:
        return jsonread.loads(self.request_raw(method, url, timeout, body))

    def request_raw(
        self,
        method: str,
        url: str,
        timeout: float | None = READ_TIMEOUT,
        body: dict[str, Any] | None = None,
    ) -> bytes:
        """The answer's body as it came (JSON text), for `request` to read."""
        data = None
        if body is not None:
            data = jsonwrite.dumps(body).encode()
        response = self._open(
            method, url, timeout, data if data is not None or method != "POST" else b"{}"
        )
        try:
            raw: bytes = response.read()
        except (OSError, unixhttp.ProtocolError) as exc:
            raise Unreachable(self.path, _reason(exc)) from None
        finally:
            response.close()
        return raw

    def stream(self, url: str, deadline: float | None = None) -> Iterator[bytes]:
        """The body of a streaming answer, chunk by chunk as the daemon sends it; with a
        `deadline` (time.monotonic()), it ends quietly when that passes."""
        response = self._open("GET", url, None)
        yield from self._chunks(response, deadline)

    def _chunks(self, response: unixhttp.Response, deadline: float | None) -> Iterator[bytes]:
        try:
            while True:
                try:
                    if deadline is not None:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return
                        response.settimeout(left)
                    chunk = response.read1(CHUNK)
                except TimeoutError:
                    if deadline is None:
                        raise Unreachable(self.path, "timed out") from None
                    return
                except (OSError, unixhttp.ProtocolError) as exc:
                    raise Unreachable(self.path, _reason(exc)) from None
                if not chunk:
                    return
                yield chunk
        finally:
            response.close()

    # The API, one method per endpoint.
    def units(self) -> list[dict[str, Any]]:
        return self.units_answer()[0]

    def units_answer(self) -> tuple[list[dict[str, Any]], bytes | None]:
        """Every unit, and the answer's text when it holds nothing else (`{"units": [...]}`,
        as json.dumps writes it: what `status --json` prints)."""
        raw = self.request_raw("GET", "/v1/units")
        answer: dict[str, Any] = jsonread.loads(raw)
        units: list[dict[str, Any]] = answer["units"]
        return units, raw if len(answer) == 1 else None

    def unit(self, name: str) -> dict[str, Any]:
        detail: dict[str, Any] = self.request("GET", unit_path(name))
        return detail

    def top(self) -> dict[str, Any]:
        frame: dict[str, Any] = self.request("GET", "/v1/top")
        return frame

    def reload(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/v1/reload", ACTION_TIMEOUT)
        return result

    def action(self, name: str, verb: str) -> dict[str, Any]:
        detail: dict[str, Any] = self.request("POST", unit_path(name, verb), ACTION_TIMEOUT)
        return detail

    def create(
        self, unit: dict[str, Any], name: str | None, remove: bool, start: bool = True
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"unit": unit, "remove": remove, "start": start}
        if name is not None:
            body["name"] = name
        answer: dict[str, Any] = self.request("POST", "/v1/units", ACTION_TIMEOUT, body)
        return answer

    def delete(self, name: str) -> None:
        self.request("DELETE", unit_path(name), ACTION_TIMEOUT)

    def kill(self, name: str, signal_name: str) -> None:
        self.request("POST", unit_path(name, "kill"), READ_TIMEOUT, {"signal": signal_name})

    def follow_logs(self, name: str) -> Iterator[bytes]:
        """A unit's whole log, then new output: connected before this returns (the stream
        misses nothing written after), unlike `logs`, which connects when iterated."""
        response = self._open("GET", unit_path(name, "logs") + "?follow=1", None)
        return self._chunks(response, None)

    def logs(self, name: str, lines: int | None, follow: bool) -> Iterator[bytes]:
        query: dict[str, str] = {"follow": "1" if follow else "0"}
        if lines is not None:
            query["n"] = str(lines)
        return self.stream(unit_path(name, "logs") + "?" + urlencode(query))

    def events(
        self,
        unit: str | None = None,
        since: int | None = None,
        replay: int | None = None,
        follow: bool = True,
        deadline: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Unit events, one dict each: the kept ones asked for, then (with `follow`) live,
        until `deadline` (time.monotonic()) if given."""
        query: dict[str, str] = {"follow": "1" if follow else "0"}
        for key, value in (("unit", unit), ("since", since), ("replay", replay)):
            if value is not None:
                query[key] = str(value)
        buffer = b""
        for chunk in self.stream("/v1/events?" + urlencode(query), deadline):
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                if line.strip():
                    yield jsonread.loads(line)


def _api_error(response: unixhttp.Response) -> ApiError:
    try:
        body = jsonread.loads(response.read())
        errors = body.get("errors")
        errors = [str(e) for e in errors] if isinstance(errors, list) else None
        return ApiError(response.status, str(body["code"]), str(body["error"]), errors)
    except (ValueError, KeyError, TypeError, OSError, unixhttp.ProtocolError):
        return ApiError(response.status, "error", f"http {response.status} {response.reason}")


def error(message: str) -> None:
    """One line on stderr, the contract's way: `sandboxctl: <lower-case message>`."""
    print(f"sandboxctl: {message}", file=sys.stderr)


if TYPE_CHECKING:
    F = TypeVar("F", bound=Callable[..., int])


def exits(run: F) -> F:
    """Map the client's errors to the contract's exit codes around a verb's `run`. (Not
    functools.wraps: functools, with the collections it imports, is ~3 ms of every call.)"""

    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return run(*args, **kwargs)
        except Unreachable as exc:
            error(str(exc))
            return EXIT_UNREACHABLE
        except ApiError as exc:
            error(exc.message)
            return exc.exit_code
        except BrokenPipeError:  # `sandboxctl logs web | head`
            _quiet_stdout()
            return 0

    wrapper.__name__, wrapper.__qualname__, wrapper.__doc__ = (
        run.__name__, run.__qualname__, run.__doc__
    )  # fmt: skip
    return wrapper  # type: ignore[return-value]


def _quiet_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
