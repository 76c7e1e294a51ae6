"""The host's listening sockets, from /proc/net/{tcp,udp}{,6}, and which process holds one.

Why /proc and not sock_diag netlink: a validation reads it once per reload, the text is small,
and the same file works in `sandboxctl validate` without any privilege. The owner is found
only for a socket that conflicts (a walk of /proc/*/fd is the expensive part).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

TCP_LISTEN = "0A"
UDP_UNCONNECTED = "07"  # a bound UDP socket receives on its port whatever its "state"


@dataclass(frozen=True)
class Listener:
    protocol: str  # "tcp" or "udp"
    address: str | None  # the IPv4 address it is bound to; None for every address
    port: int
    inode: int


def _address(hex_addr: str) -> str | bool | None:
    """The IPv4 address of a /proc/net entry; None for a wildcard, False for an IPv6-only one
    (which no IPv4 DNAT could ever steal traffic from)."""
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        ip = ipaddress.IPv4Address(raw[::-1])  # host byte order, little-endian here
        return None if ip.is_unspecified else str(ip)
    # IPv6: four 32-bit words, each in host byte order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    ip6 = ipaddress.IPv6Address(words)
    if ip6.is_unspecified:
        return None  # "::" takes IPv4 too unless IPV6_V6ONLY; assume it does (the default)
    if ip6.ipv4_mapped is not None:
        return str(ip6.ipv4_mapped)
    return False


def listening(proc: str = "/proc") -> list[Listener]:
    """Every TCP listener and bound UDP socket of the caller's network namespace."""
    found: list[Listener] = []
    for protocol, state in (("tcp", TCP_LISTEN), ("udp", UDP_UNCONNECTED)):
        for suffix in ("", "6"):
            try:
                with open(f"{proc}/net/{protocol}{suffix}", encoding="ascii") as f:
                    lines = f.read().splitlines()[1:]
            except OSError:
                continue  # no IPv6 in this kernel
            for line in lines:
                fields = line.split()
                if len(fields) < 10 or fields[3] != state:
                    continue
                hex_addr, hex_port = fields[1].split(":")
                address = _address(hex_addr)
                if address is False or address is True:
                    continue
                found.append(Listener(protocol, address, int(hex_port, 16), int(fields[9])))
    return found


def owner(inode: int, proc: str = "/proc") -> str | None:
    """ "comm (pid N)" of a process holding socket `inode`; None if none is found (it closed,
    or it is another user's and we are not root)."""
    target = f"socket:[{inode}]"
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") != target:
                    continue
            except OSError:
                continue
            try:
                with open(f"{proc}/{pid}/comm", encoding="utf-8", errors="replace") as f:
                    comm = f.read().strip()
            except OSError:
                comm = "?"
            return f"{comm} (pid {pid})"
    return None
