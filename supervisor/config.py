"""The daemon's own configuration (`/etc/sandboxd/sandboxd.toml`).

Every path is a key here and a flag on `sandboxd`, so tests and side-by-side daemons never touch
/etc or /run. A missing file at the default path means "all defaults"; a file named explicitly
with --config must exist.
"""

from __future__ import annotations

import ipaddress
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from supervisor.contract import Output
from supervisor.errors import ConfigError
from supervisor.linux import journal
from supervisor.log import LogFormat
from supervisor.unit import userns
from supervisor.unit.schema import Size, _did_you_mean

DEFAULT_CONFIG_PATH = Path("/etc/sandboxd/sandboxd.toml")
# The longest IPv6 subnet prefix: 256 addresses, as many as an IPv4 /24.
MAX_PREFIX6 = 120


class NetworkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bridge: str = Field(default="sbx0", pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
    subnet: str = "10.88.0.0/16"

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str) -> str:
        try:
            net = ipaddress.IPv4Network(value, strict=True)
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not an IPv4 network such as 10.88.0.0/16: {exc}"
            ) from None
        if net.prefixlen > 30:
            raise ValueError(f"{value!r} is too small: it needs room for the bridge and sandboxes")
        return str(net)

    # None: IPv4 only (IPv6 from sandboxes is dropped at their ports, antispoof.py).
    subnet6: str | None = None

    @field_validator("subnet6")
    @classmethod
    def _subnet6(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            net = ipaddress.IPv6Network(value, strict=True)
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not an IPv6 network such as fd00:88::/64: {exc}"
            ) from None
        if net.prefixlen > MAX_PREFIX6:
            raise ValueError(
                f"{value!r} is too small: a prefix up to /{MAX_PREFIX6} leaves room for the "
                "bridge and sandboxes (/64 is usual)"
            )
        if net.is_link_local or net.is_multicast or net.is_loopback or net.is_unspecified:
            raise ValueError(
                f"{value!r} is not a unicast range for hosts; use a unique local one "
                "(fd00::/8, e.g. fd00:88::/64) or a global prefix routed to this host"
            )
        return str(net)


# A fleet node's name: one path segment of the etcd keys (cluster/keys.py).
NODE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"


def _hostname() -> str:
    return socket.gethostname().split(".", 1)[0] or "localhost"


class ClusterConfig(BaseModel):
    """`[cluster]`: desired state from etcd (README "Running a fleet")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoints: list[str] = Field(min_length=1)
    node: str = Field(default_factory=_hostname, pattern=f"^{NODE_NAME}$")
    prefix: str = Field(default="/sandboxd/v1", pattern=r"^(/[A-Za-z0-9_.-]+)+$")
    lease_ttl: int = Field(default=10, ge=2, le=3600)
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        for endpoint in value:
            if not endpoint.startswith(("http://", "https://")):
                raise ValueError(
                    f"{endpoint!r} is not an http:// or https:// URL of an etcd member"
                )
        return value

    @model_validator(mode="after")
    def _cert_and_key(self) -> ClusterConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together (a TLS client certificate and its key)")
        return self


class DaemonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    units_dir: Path = Path("/etc/sandboxd/units")
    state_dir: Path = Path("/run/sandboxd")
    data_dir: Path = Path("/var/lib/sandboxd")
    socket: Path | None = None  # None: <state_dir>/control.sock
    log_dir: Path = Path("/var/log/sandboxd")
    cgroup_parent: str | None = None  # None: v2 the daemon's own cgroup; v1 "sandboxd"
    group: str = "sandboxd"  # members may read status and logs through the socket
    on_exit: Literal["stop", "leave"] = "stop"
    log_format: LogFormat = "auto"
    log_max_size: Size = 10 << 20
    log_keep: int = Field(default=5, ge=1, le=100)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    # Where service output goes unless a unit says (`[service] output`). Under systemd the
    # journal is where operators look first, so there it goes to both; elsewhere to files only.
    output: Output = Field(default_factory=lambda: "both" if journal.available() else "file")
    # Host ids (first-last, inclusive) whose 65536-aligned blocks `user_namespace = "pick"`
    # hands out, skipping those the subordinate-id files give host users (unit/userns.py).
    userns_pool: str = userns.DEFAULT_POOL
    subuid_file: Path = Path("/etc/subuid")
    subgid_file: Path = Path("/etc/subgid")
    cluster: ClusterConfig | None = None  # None: no fleet, units come from units_dir alone

    @field_validator("userns_pool")
    @classmethod
    def _userns_pool(cls, value: str) -> str:
        return str(userns.parse_pool(value))

    @property
    def pool(self) -> userns.IdRange:
        return userns.parse_pool(self.userns_pool)

    def subids(self) -> list[userns.Reserved]:
        """The host users' subordinate uid and gid ranges, read now."""
        return userns.read_subids(str(self.subuid_file), str(self.subgid_file))

    @property
    def socket_path(self) -> Path:
        return self.socket if self.socket is not None else self.state_dir / "control.sock"


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> DaemonConfig:
    """Read the config file (if any) and apply command-line overrides on top of it.

    `path=None` means the default path, which may be absent; an explicit path must exist.
    """
    source = path or DEFAULT_CONFIG_PATH
    data: dict[str, Any] = {}
    try:
        with open(source, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if path is not None:
            raise ConfigError(str(source), "", "no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(source), "", f"invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(str(source), "", exc.strerror or str(exc)) from None
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return DaemonConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            fields = DaemonConfig.model_fields if len(first["loc"]) == 1 else {}
            message = "unknown key" + _did_you_mean(str(first["loc"][-1]), list(fields))
        else:
            # pydantic prefixes our own ValueErrors with "Value error, ": users need the rest.
            message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(str(source), key, message) from None
