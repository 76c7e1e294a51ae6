"""An asyncio client of etcd's v3 JSON gateway (etcd's own grpc-gateway: /v3/kv/range,
/v3/kv/put, /v3/kv/txn, /v3/watch, /v3/lease/...), on the aiohttp the daemon already uses.

Why not a client library: the README's "Libraries" says (etcd3 is unmaintained, aetcd is
asyncio but barely kept, etcd3gw is kept but blocks on `requests`, which the single-threaded
daemon would need a thread for). The gateway is etcd's documented, versioned HTTP API; keys and
values travel base64-encoded; int64s as strings.

Endpoints are tried in turn: a request that cannot reach one member (refused, reset, timed
out) goes to the next, so a killed leader costs one retry. Only when every member fails is
`Unreachable` raised; the caller decides what that means (the agent keeps its services).
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

REQUEST_TIMEOUT = 5.0  # one request to one member; a member without quorum hangs until then
CONNECT_TIMEOUT = 2.0
# One watch response's JSON: etcd sends at most its request limit (--max-request-bytes,
# 1.5 MiB by default) per event, base64 adds a third; room for a batch of them.
MAX_LINE = 64 << 20


class EtcdError(Exception):
    """etcd answered, with an error (a bad request, a compacted revision, ...)."""


class Unreachable(Exception):
    """No member answered."""


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text or "")


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    lease: int = 0

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> KeyValue:
        return cls(
            unb64(kv["key"]).decode("utf-8", errors="replace"),
            unb64(kv.get("value")),
            int(kv.get("mod_revision", 0)),
            int(kv.get("lease", 0)),
        )


@dataclass(frozen=True)
class Event:
    kv: KeyValue
    deleted: bool


@dataclass(frozen=True)
class WatchBatch:
    revision: int  # the header's: the store's revision when the response was sent
    events: list[Event]
    # The watch's first response: its header revision is the store's at creation, with the
    # events from the start revision still to come (only a progress notice says that every
    # change up to its revision was sent).
    created: bool = False


class Compacted(EtcdError):
    """The watch's start revision is gone: the caller must read everything again."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted (now {compact_revision})")
        self.compact_revision = compact_revision


def tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if ca is None and cert is None:
        return None
    context = ssl.create_default_context(cafile=ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


class Gateway:
    def __init__(self, endpoints: Sequence[str], tls: ssl.SSLContext | None = None) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._next = 0  # the member to try first: the last one that answered
        self._tls = tls
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._tls if self._tls is not None else False)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _order(self) -> list[str]:
        n = len(self.endpoints)
        return [self.endpoints[(self._next + i) % n] for i in range(n)]

    def _answered(self, endpoint: str) -> None:
        self._next = self.endpoints.index(endpoint)

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST one request to the first member that answers."""
        problems = []
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT, sock_connect=CONNECT_TIMEOUT)
        for endpoint in self._order():
            try:
                async with self._http().post(endpoint + path, json=body, timeout=timeout) as r:
                    data = await r.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError, ValueError, OSError) as exc:
                problems.append(f"{endpoint}: {_describe(exc)}")
                continue
            if not isinstance(data, dict):
                problems.append(f"{endpoint}: not a JSON object")
                continue
            if r.status >= 500 and _retryable(data):
                problems.append(f"{endpoint}: {data.get('error') or data.get('message')}")
                continue
            if r.status != 200 or "error" in data:
                raise EtcdError(str(data.get("message") or data.get("error") or data))
            self._answered(endpoint)
            return data
        raise Unreachable("; ".join(problems))

    # -- kv --------------------------------------------------------------------------------

    async def range(
        self, key: str, end: str | None = None, revision: int = 0
    ) -> tuple[int, list[KeyValue]]:
        """(the store's revision, the keys in [key, end)) at `revision` (0: the newest)."""
        body: dict[str, Any] = {"key": b64(key)}
        if end is not None:
            body["range_end"] = b64(end)
        if revision:
            body["revision"] = str(revision)
        data = await self.call("/v3/kv/range", body)
        kvs = [KeyValue.from_json(kv) for kv in data.get("kvs", [])]
        return int(data["header"]["revision"]), kvs

    async def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        data = await self.call("/v3/kv/put", body)
        return int(data["header"]["revision"])

    async def delete(self, key: str, end: str | None = None) -> int:
        body = {"key": b64(key)} | ({"range_end": b64(end)} if end is not None else {})
        data = await self.call("/v3/kv/deleterange", body)
        return int(data.get("deleted", 0))

    async def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> bool:
        """One transaction: `success` applied only if every `compare` holds."""
        data = await self.call("/v3/kv/txn", {"compare": compare, "success": success})
        return bool(data.get("succeeded", False))

    # -- leases ----------------------------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        data = await self.call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(data["ID"])

    async def keepalive(self, lease: int) -> int:
        """The lease's remaining TTL after the renewal; 0 when it has expired."""
        data = await self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(data.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        await self.call("/v3/lease/revoke", {"ID": str(lease)})

    # -- watch -----------------------------------------------------------------------------

    async def watch(self, key: str, end: str, start_revision: int) -> AsyncIterator[WatchBatch]:
        """Changes of [key, end) from `start_revision` on, from the first member that takes
        the watch. Ends by raising Unreachable when the stream breaks (the member died or lost
        its leader) and Compacted when `start_revision` is gone."""
        body = {
            "create_request": {
                "key": b64(key), "range_end": b64(end), "start_revision": str(start_revision),
                "progress_notify": True,
            }
        }  # fmt: skip
        # A member cut off from the quorum would keep the stream open and silent: "hasleader"
        # (etcd's WithRequireLeader, as gRPC metadata) makes it cancel the watch instead.
        headers = {"Grpc-Metadata-hasleader": "true"}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
        problems = []
        for endpoint in self._order():
            try:
                response = await self._http().post(
                    endpoint + "/v3/watch", json=body, headers=headers, timeout=timeout
                )
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                problems.append(f"{endpoint}: {_describe(exc)}")
                continue
            async with response:
                if response.status != 200:
                    problems.append(f"{endpoint}: HTTP {response.status}")
                    continue
                self._answered(endpoint)
                async for batch in _batches(response, endpoint):
                    yield batch
                raise Unreachable(f"{endpoint}: the watch stream ended")
        raise Unreachable("; ".join(problems))


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The stream's lines, of any length up to MAX_LINE: aiohttp's own line reader stops at
    64 KiB, and one watch response carries whole values (a unit may be 1 MiB, base64-encoded)."""
    buffer = b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line
        if len(buffer) > MAX_LINE:
            raise ValueError(f"a watch response larger than {MAX_LINE} bytes")
    if buffer:
        yield buffer


async def _batches(response: aiohttp.ClientResponse, endpoint: str) -> AsyncIterator[WatchBatch]:
    """The stream's JSON objects, one per line (grpc-gateway's streaming form)."""
    try:
        async for line in _lines(response):
            if not line.strip():
                continue
            data = json.loads(line)
            if "error" in data:
                raise Unreachable(f"{endpoint}: {data['error'].get('message', data['error'])}")
            result = data.get("result", {})
            if int(result.get("compact_revision", 0) or 0):
                raise Compacted(int(result["compact_revision"]))
            if result.get("canceled"):
                raise Unreachable(f"{endpoint}: watch canceled: {result.get('cancel_reason')}")
            events = [
                Event(KeyValue.from_json(e["kv"]), e.get("type") == "DELETE")
                for e in result.get("events", [])
            ]
            revision = int(result.get("header", {}).get("revision", 0))
            yield WatchBatch(revision, events, bool(result.get("created", False)))
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        raise Unreachable(f"{endpoint}: {_describe(exc)}") from None


def _retryable(data: dict[str, Any]) -> bool:
    """A member's error another member may not have (no leader, stopping, timed out)."""
    message = str(data.get("message") or data.get("error") or "")
    return any(
        m in message for m in ("no leader", "leader changed", "timed out", "stopping", "unhealthy")
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
