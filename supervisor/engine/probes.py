"""Health probes that talk to the sandbox over its own network: `tcp = PORT`, `http = URL`.

Each probe is one coroutine on the daemon's event loop, no thread and no fork: the socket is
created inside the sandbox's network namespace (linux/netns.py: setns there, socket(), setns
back, nothing awaited in between) and then connected and read asynchronously. So
`127.0.0.1:8080` means the sandbox's loopback, which is where `network.mode = "none"`
services listen and which the host cannot otherwise reach.

An HTTP probe is a minimal HTTP/1.0 GET (no redirects followed; 2xx and 3xx are healthy, as
Kubernetes' httpGet) whose host must be an IP address or `localhost`: the daemon does no DNS
lookup for a sandbox, since it would use the host's resolver and block the loop. `https://`
works without certificate checks (a probe asks "is it up", not "is it who it claims").
The exec probe, run by the fork server, is in probe_exec.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Protocol

from supervisor.linux import netns

OUTPUT_MAX = 512  # characters of probe output kept for status
RESPONSE_MAX = 4096  # bytes of an HTTP response read


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    output: str  # what it said, or why it failed (truncated to OUTPUT_MAX)


class Probe(Protocol):
    async def run(self, timeout: float) -> ProbeResult: ...

    def close(self) -> None:
        """Synchronously end anything still running (a hung child) and free it."""
        ...


def truncate(text: str, limit: int = OUTPUT_MAX) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _address(host: str) -> tuple[int, str]:
    if host == "localhost":
        return socket.AF_INET, "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host {host!r} must be an IP address or localhost") from None
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), str(ip)


async def _connect(pid: int, family: int, address: tuple[str, int]) -> socket.socket:
    sock = netns.socket_in(pid, family)
    try:
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


class TcpProbe:
    """Healthy when a TCP connection to 127.0.0.1:PORT in the sandbox is accepted."""

    def __init__(self, pid: int, port: int) -> None:
        self.pid, self.port = pid, port

    async def run(self, timeout: float) -> ProbeResult:
        where = f"127.0.0.1:{self.port}"
        try:
            async with asyncio.timeout(timeout):
                sock = await _connect(self.pid, socket.AF_INET, ("127.0.0.1", self.port))
        except (OSError, TimeoutError) as exc:
            return ProbeResult(False, f"tcp {where}: {_error(exc)}")
        sock.close()
        return ProbeResult(True, f"tcp {where}: connected")

    def close(self) -> None:
        pass


class HttpProbe:
    """Healthy when GET URL (from inside the sandbox) answers 2xx or 3xx within the timeout."""

    def __init__(self, pid: int, url: str) -> None:
        self.pid, self.url = pid, url
        parts = urllib.parse.urlsplit(url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.host_header = parts.netloc.rpartition("@")[2]

    async def run(self, timeout: float) -> ProbeResult:
        try:
            async with asyncio.timeout(timeout):
                return await self._get()
        except (OSError, TimeoutError, ValueError, ssl.SSLError) as exc:
            return ProbeResult(False, f"GET {self.url}: {_error(exc)}")

    async def _get(self) -> ProbeResult:
        family, ip = _address(self.host)
        sock = await _connect(self.pid, family, (ip, self.port))
        context = None
        if self.tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=context, server_hostname=self.host if context else None
            )
        except BaseException:
            sock.close()
            raise
        try:
            request = (
                f"GET {self.target} HTTP/1.0\r\nHost: {self.host_header}\r\n"
                "User-Agent: sandboxd-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            )
            writer.write(request.encode("latin-1"))
            await writer.drain()
            response = await reader.read(RESPONSE_MAX)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        return _verdict(response)

    def close(self) -> None:
        pass


def _verdict(response: bytes) -> ProbeResult:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return ProbeResult(False, truncate(f"not an HTTP response: {status_line!r}"))
    code = int(parts[1])
    text = body.decode("utf-8", errors="replace")
    return ProbeResult(200 <= code < 400, truncate(f"{status_line}\n{text}"))
