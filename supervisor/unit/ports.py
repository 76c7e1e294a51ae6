"""Published ports as unit files spell them (`[network] ports`), parsed into plain values.

Grammar, Docker's: ``[HOST_IP:]HOST_PORT[-LAST]:SANDBOX_PORT[-LAST][/tcp|/udp]``. Without a host
address the port is published on every address of the host; tcp is the default protocol; a
range maps port to port, so both sides must be equally long. The canonical spelling
(`PublishedPort.__str__`) is what the spec stores, so "8080:80/tcp" and "8080:80" hash the same.

Pure: no I/O. Conflicts between units are supervisor/unit/checks.py's, the rules
supervisor/sandbox/host/portrules.py's.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Protocol = Literal["tcp", "udp"]
# One range is at most this many ports: each becomes a rule, and a typo such as "1-65535:..."
# would otherwise install 65535 of them.
MAX_RANGE = 1024

_SPEC = re.compile(
    r"(?:(?P<ip>[0-9.]+):)?"
    r"(?P<host>\d{1,5})(?:-(?P<host_last>\d{1,5}))?"
    r":(?P<sbx>\d{1,5})(?:-(?P<sbx_last>\d{1,5}))?"
    r"(?:/(?P<proto>[A-Za-z]+))?"
)
_EXAMPLE = '"8080:80", "127.0.0.1:5353:53/udp" or "9000-9002:9000-9002"'


@dataclass(frozen=True, order=True)
class PublishedPort:
    """Host ports `host_port..host_port+count-1` on `host_ip` (None: every address) forwarded
    to the sandbox's ports `sandbox_port..` of the same protocol."""

    protocol: Protocol
    host_port: int
    sandbox_port: int
    count: int = 1
    host_ip: str | None = None

    @property
    def host_ports(self) -> range:
        return range(self.host_port, self.host_port + self.count)

    def pairs(self) -> Iterator[tuple[int, int]]:
        """(host port, sandbox port) for every port of the range."""
        for offset in range(self.count):
            yield self.host_port + offset, self.sandbox_port + offset

    def overlaps(self, other: PublishedPort) -> bool:
        """Both would catch the same packet: same protocol, a common port, and a common
        address (no address is every address)."""
        if self.protocol != other.protocol:
            return False
        if None not in (self.host_ip, other.host_ip) and self.host_ip != other.host_ip:
            return False
        ours, theirs = self.host_ports, other.host_ports
        return ours.start < theirs.stop and theirs.start < ours.stop

    def __str__(self) -> str:
        def span(first: int) -> str:
            return f"{first}-{first + self.count - 1}" if self.count > 1 else str(first)

        where = f"{self.host_ip}:" if self.host_ip else ""
        return f"{where}{span(self.host_port)}:{span(self.sandbox_port)}/{self.protocol}"


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} is outside 1-65535")
    return value


def _span(first: str, last: str | None) -> tuple[int, int]:
    start = _port(first)
    end = _port(last) if last is not None else start
    if end < start:
        raise ValueError(f"range {start}-{end} ends before it starts")
    return start, end - start + 1


def parse_published_port(value: object) -> PublishedPort:
    """A PublishedPort from its unit-file string; ValueError with a message for users."""
    if isinstance(value, PublishedPort):
        return value
    if not isinstance(value, str):
        raise ValueError(f"a published port is a string such as {_EXAMPLE}")
    match = _SPEC.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a published port such as {_EXAMPLE}")
    proto = (match["proto"] or "tcp").lower()
    protocol: Protocol = "udp" if proto == "udp" else "tcp"
    if proto != protocol:
        raise ValueError(f"{value!r}: protocol {match['proto']!r} is not tcp or udp")
    host_ip = None
    if match["ip"] is not None:
        try:
            address = ipaddress.IPv4Address(match["ip"])
        except ValueError:
            raise ValueError(f"{value!r}: {match['ip']!r} is not an IPv4 address") from None
        if address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
            raise ValueError(f"{value!r}: {address} is not a unicast address")
        host_ip = None if address.is_unspecified else str(address)
    try:
        host, host_count = _span(match["host"], match["host_last"])
        sbx, sbx_count = _span(match["sbx"], match["sbx_last"])
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    if host_count != sbx_count:
        raise ValueError(
            f"{value!r}: the host range has {host_count} ports and the sandbox range "
            f"{sbx_count}; they map port to port, so they must be equally long"
        )
    if host_count > MAX_RANGE:
        raise ValueError(f"{value!r}: a range may span at most {MAX_RANGE} ports")
    return PublishedPort(protocol, host, sbx, host_count, host_ip)
