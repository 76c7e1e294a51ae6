"""`[[listen]]`: sockets the daemon binds and hands to the service (socket activation).

One table per socket, exactly one of `tcp`, `udp` or `unix`. The daemon binds each before the
unit's first start and keeps it open across every restart of the service (and, through the
service's own copies, across a restart of the daemon), so a client's connection waits in the
listen backlog while the service restarts instead of being refused.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

# sd_listen_fds_with_names(3): a name is at most 255 characters, with no ":" (the separator).
NAME = re.compile(r"[A-Za-z0-9_.@-]{1,255}")


def _error(message: str, key: str | None = None) -> PydanticCustomError:
    ctx: dict[str, Any] = {"message": message}
    if key is not None:
        ctx["key"] = key
    return PydanticCustomError("unit_value", "{message}", ctx)


def parse_inet(value: int | str, key: str) -> tuple[str, int]:
    """8080 -> ("0.0.0.0", 8080) (every address); "127.0.0.1:8080", "[::1]:8080"."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _error('a port (8080) or an address with a port ("127.0.0.1:8080")', key)
    if isinstance(value, int):
        host, port = "0.0.0.0", value
    else:
        text, sep, port_text = value.rpartition(":")
        if not sep or not port_text.isdigit():
            raise _error(f'{value!r}: an address with a port, e.g. "127.0.0.1:8080"', key)
        host, port = text.removeprefix("[").removesuffix("]"), int(port_text)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise _error(f"{value!r}: {host!r} is not an IP address", key) from None
    if not 1 <= port <= 65535:
        raise _error(f"port {port} is not from 1 to 65535", key)
    return host, port


class Listen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    tcp: int | str | None = None
    udp: int | str | None = None
    unix: str | None = None
    name: str | None = None  # in LISTEN_FDNAMES; default: the kind and port ("tcp-8080")
    mode: int = Field(default=0o660, ge=0, le=0o777)  # unix only
    owner: str | None = None  # unix only: a host user, the socket file's owner
    group: str | None = None  # unix only: a host group

    @model_validator(mode="after")
    def _one_kind(self) -> Listen:
        kinds = [k for k in ("tcp", "udp", "unix") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise _error('needs exactly one of tcp = 8080, udp = 5353 or unix = "/run/x.sock"')
        kind = kinds[0]
        if kind == "unix":
            path = self.unix or ""
            if not path.startswith("/") or "\0" in path or len(path.encode()) > 107:
                raise _error(f"{path!r}: an absolute path of at most 107 bytes", "unix")
        else:
            parse_inet(getattr(self, kind), kind)
            for key in ("owner", "group"):
                if getattr(self, key) is not None:
                    raise _error(f"{key} is for unix sockets only", key)
        if self.name is not None and not NAME.fullmatch(self.name):
            raise _error(
                f"{self.name!r}: letters, digits and '_.@-', at most 255 characters", "name"
            )
        return self

    @property
    def kind(self) -> str:
        return "tcp" if self.tcp is not None else "udp" if self.udp is not None else "unix"

    def fd_name(self) -> str:
        if self.name is not None:
            return self.name
        if self.kind == "unix":
            return "unix"
        _, port = parse_inet(getattr(self, self.kind), self.kind)
        return f"{self.kind}-{port}"


def needs_held_netns(listen: list[Listen] | tuple[Listen, ...], mode: str) -> bool:
    """A unit whose tcp/udp sockets must live in its own network namespace: one the daemon
    holds across its runs (linux/heldnetns.py), as the host's namespace outlives them too."""
    return mode != "host" and any(entry.kind != "unix" for entry in listen)


def held_netns_key(listen: list[Listen] | tuple[Listen, ...], network: BaseModel) -> str:
    """What a held namespace was made for: a unit whose network section or inet sockets
    changed gets a new one (its veth, address and routes are built once per namespace)."""
    inet = [entry.model_dump(mode="json") for entry in listen if entry.kind != "unix"]
    text = json.dumps([network.model_dump(mode="json"), inet], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
