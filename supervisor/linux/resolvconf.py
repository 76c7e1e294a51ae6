"""The /etc/resolv.conf of a bridge-mode sandbox, decided in the daemon (resolv.conf(5)).

A bridge sandbox has its own network namespace, so a nameserver on the host's loopback
(systemd-resolved's stub 127.0.0.53, a local dnsmasq on 127.0.0.1, ::1) is unreachable from it:
there it would be the sandbox's own `lo`. So the sandbox's file is built, not copied:

- `[network] dns = [...]` (and `dns_search`) in the unit: exactly those servers;
- else the host's /etc/resolv.conf, and when that points at the systemd-resolved stub, the
  upstream list systemd-resolved keeps in /run/systemd/resolve/resolv.conf instead. Loopback
  and link-local nameservers are left out (link-local ones are scoped to a host interface). If
  none remains the sandbox gets none, with a warning: sandboxd never invents a public resolver.

`search`/`domain` and `options` lines are kept from the host (a unit's `dns_search` replaces
the search list), as Docker does. The result is content, not a path: the launch writes it into
the sandbox's private /etc (sandbox/host/rootplan.py), so nothing a sandbox does to its copy
reaches the host's file. Host paths are parameters: tests never read or touch the real ones.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass

HOST_RESOLV = "/etc/resolv.conf"
# systemd-resolved's list of the upstream servers it forwards to (what the stub hides).
RESOLVED_UPSTREAM = "/run/systemd/resolve/resolv.conf"
RESOLVED_STUB = ipaddress.ip_address("127.0.0.53")
_READ_MAX = 64 << 10  # a resolv.conf is a few lines; a bigger file is not one


@dataclass(frozen=True)
class Resolver:
    """The parts of a resolv.conf a sandbox needs."""

    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class SandboxResolv:
    content: bytes
    source: str  # where the nameservers came from, for the file's header and the log
    warning: str | None = None  # set when the sandbox gets no nameserver at all


def parse(text: str) -> Resolver:
    """The nameservers, search list and options of a resolv.conf; the last `search` or
    `domain` line wins, as in glibc; unparsable nameservers are skipped."""
    servers: list[str] = []
    search: tuple[str, ...] = ()
    options: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0][0] in "#;":
            continue
        key, args = words[0], words[1:]
        if key == "nameserver" and args:
            try:
                servers.append(str(ipaddress.ip_address(args[0])))
            except ValueError:
                continue
        elif key in ("search", "domain") and args:
            search = tuple(args) if key == "search" else (args[0],)
        elif key == "options":
            options += args
    return Resolver(tuple(servers), search, tuple(dict.fromkeys(options)))


def reachable(server: str) -> bool:
    """Whether a host nameserver can be reached from a sandbox's own network namespace."""
    ip = ipaddress.ip_address(server.split("%", maxsplit=1)[0])
    return not (ip.is_loopback or ip.is_link_local)


# Texts by path, with the stat signature they were read at: a reload checks every bridge unit
# (unit/checks.py) and every launch builds a file, so 1000 units cost 1000 stats, not reads.
_CACHE: dict[str, tuple[tuple[int, int, int, int], str]] = {}


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            cached = _CACHE.get(path)
            if cached is not None and cached[0] == key:
                return cached[1]
            text = f.read(_READ_MAX).decode("utf-8", "replace")
    except OSError:
        return None
    _CACHE[path] = (key, text)
    return text


def host_resolver(
    host_path: str = HOST_RESOLV, upstream_path: str = RESOLVED_UPSTREAM
) -> tuple[Resolver, str]:
    """The host's resolver as a sandbox can use it, and where its nameservers came from."""
    text = _read(host_path)
    if text is None:
        return Resolver(), f"{host_path} (unreadable)"
    host = parse(text)
    source = host_path
    servers = host.nameservers
    if str(RESOLVED_STUB) in servers:
        upstream_text = _read(upstream_path)
        upstream = parse(upstream_text) if upstream_text is not None else Resolver()
        servers = upstream.nameservers
        source = f"{upstream_path} (the upstream servers of the stub {RESOLVED_STUB})"
        if not host.search:
            host = Resolver(host.nameservers, upstream.search, host.options)
    kept = tuple(s for s in servers if reachable(s))
    return Resolver(kept, host.search, host.options), source


def render(resolver: Resolver, source: str) -> bytes:
    lines = [f"# Written by sandboxd for this sandbox; nameservers from {source}."]
    if resolver.search:
        lines.append("search " + " ".join(resolver.search))
    lines += [f"nameserver {s}" for s in resolver.nameservers]
    if resolver.options:
        lines.append("options " + " ".join(resolver.options))
    return ("\n".join(lines) + "\n").encode()


def for_sandbox(
    dns: Sequence[str] | None,
    dns_search: Sequence[str] | None,
    *,
    host_path: str = HOST_RESOLV,
    upstream_path: str = RESOLVED_UPSTREAM,
) -> SandboxResolv:
    """The resolv.conf of a bridge sandbox with the unit's `dns`/`dns_search` (None: unset)."""
    host, source = host_resolver(host_path, upstream_path)
    if dns:
        resolver = Resolver(tuple(dns), host.search, host.options)
        source = "the unit's network.dns"
    else:
        resolver = host
    if dns_search is not None:
        resolver = Resolver(resolver.nameservers, tuple(dns_search), resolver.options)
    warning = None
    if not resolver.nameservers:
        warning = (
            f"no nameserver a sandbox can reach in {source} (loopback and link-local ones "
            "are the host's own); bridge sandboxes get none: set network.dns in the unit"
        )
    return SandboxResolv(render(resolver, source), source, warning)
