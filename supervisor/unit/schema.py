"""The unit file schema: one pydantic model per TOML section, every key the README documents.

Models are frozen and forbid unknown keys; defaults are filled in, so a validated `UnitFile`
is the complete desired state of a unit. Durations are float seconds and sizes int bytes
(None = unlimited); both serialise back to their canonical spelling, which keeps the spec hash
independent of how the operator wrote them.
"""

from __future__ import annotations

import difflib
import ipaddress
import posixpath
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from supervisor.contract import Output
from supervisor.images.reference import parse_ref
from supervisor.unit.credentials import Credential, check_name
from supervisor.unit.listen import Listen
from supervisor.unit.ports import PublishedPort, parse_published_port
from supervisor.unit.pressure import PressureLimit, parse_pressure_action, parse_pressure_limit
from supervisor.unit.quantities import (
    format_duration,
    format_size,
    parse_duration,
    parse_signal,
    parse_size,
)

Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
Size = Annotated[
    int | None, BeforeValidator(parse_size), PlainSerializer(format_size, return_type=str)
]
SignalName = Annotated[str, BeforeValidator(parse_signal)]
PressureLimitValue = Annotated[
    PressureLimit, BeforeValidator(parse_pressure_limit), PlainSerializer(str, return_type=str)
]
PressureAction = Annotated[str, BeforeValidator(parse_pressure_action)]

# A unit name becomes a file stem, a cgroup directory, a hostname and a log file name, so it
# must be safe in all four: no slash, no leading dot, no spaces, short.
UNIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}")
# pydantic's `pattern` searches; anchor it so "../x" or "a b" cannot match a part of the string.
UnitName = Annotated[str, Field(pattern=f"^(?:{UNIT_NAME.pattern})$")]

NAMESPACES = ("pid", "mount", "uts", "ipc", "net", "cgroup", "user")
Namespace = Literal["pid", "mount", "uts", "ipc", "net", "cgroup", "user"]
# "user": root inside is an unprivileged range of host ids (unit/userns.py), the default
# since issue 27; `user_namespace = "host"` or an explicit list without it opts out.
DEFAULT_NAMESPACES: tuple[Namespace, ...] = ("pid", "mount", "uts", "ipc", "net", "cgroup", "user")

# capabilities(7), without the CAP_ prefix.
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip
# Podman's default set (Docker's 14 without NET_RAW, SYS_CHROOT, MKNOD and AUDIT_WRITE): what
# most services expect, nothing that administers the host. NET_RAW forges packets on a shared
# bridge; ping works without it (ICMP datagram sockets, ping_group_range). MKNOD is useless
# behind the device cgroup, SYS_CHROOT and AUDIT_WRITE are rarely needed. A root service gets
# these; a non-root `user` gets none unless `capabilities` is set (caps.py).
DEFAULT_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "NET_BIND_SERVICE", "SETFCAP",
)  # fmt: skip


def _did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def keyed_error(key: str, message: str) -> PydanticCustomError:
    """An error from a model-level check, naming the key (relative to the model) it is about.

    pydantic puts model-level errors at the model's own location; the loader appends
    `ctx["key"]` so the user still reads `resources.memory_high: ...`, not `resources: ...`.
    """
    return PydanticCustomError("unit_value", "{message}", {"message": message, "key": key})


def _capability(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError('capability names are strings such as "NET_BIND_SERVICE"')
    name = value.strip().upper().removeprefix("CAP_")
    if name not in CAPABILITIES:
        raise ValueError(f"unknown capability {value!r}{_did_you_mean(name, CAPABILITIES)}")
    return name


Capability = Annotated[str, BeforeValidator(_capability)]


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path")
    if "\0" in value:
        raise ValueError("path contains a NUL byte")
    return posixpath.normpath(value)


AbsolutePath = Annotated[str, Field(min_length=1, max_length=4096)]

# The kernel's own filesystems: a mount over them would undo the masked and read-only paths
# (/proc/sys, /proc/kcore ...) or the minimal /dev behind the device cgroup, and a bind of the
# host's copy would show the host's processes, sysfs or device nodes. Devices go in `devices`.
KERNEL_TREES = ("/proc", "/sys", "/dev")
# A tmpfs without a size may fill half the host's RAM (its pages are charged to the unit's
# memory cgroup, but memory_max is unlimited by default), and size=0 means no limit at all.
TMPFS_MIN, TMPFS_MAX = 4 << 10, 16 << 30
TMP_SIZE = 64 << 20  # /tmp, unless [sandbox] tmp_size says otherwise
RUN_SIZE = 16 << 20  # /run: sockets, pid files and locks (a bigger one: a tmpfs mount at /run)


def _outside_kernel_trees(path: str, what: str) -> str:
    for tree in KERNEL_TREES:
        if path == tree or path.startswith(tree + "/"):
            hint = " (list devices in sandbox.devices)" if tree == "/dev" else ""
            raise ValueError(f"{what} {path!r} is in the kernel's {tree}{hint}")
    return path


def _tmpfs_size(value: int | None) -> int:
    if value is None or not TMPFS_MIN <= value <= TMPFS_MAX:
        shown = "max" if value is None else format_size(value)
        raise ValueError(
            f"a tmpfs size must be from {format_size(TMPFS_MIN)} to {format_size(TMPFS_MAX)}, "
            f"got {shown}"
        )
    return value


class Section(BaseModel):
    # strict: TOML has real booleans and numbers, so "yes" or "256" (a string) is a mistake to
    # report, not something to coerce.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Service(Section):
    exec: list[Annotated[str, Field(max_length=65536)]] = Field(min_length=1, max_length=4096)
    env: dict[str, str] = Field(default_factory=dict)
    workdir: AbsolutePath = "/"
    user: str = "root"
    group: str | None = None  # None: the user's primary group
    stop_signal: SignalName = "SIGTERM"
    stop_timeout: Duration = 10.0
    ready: Literal["started", "notify"] = "started"
    start_timeout: Duration = 90.0
    watchdog: Duration = 0.0
    autostart: bool = True
    after: list[UnitName] = Field(default_factory=list)
    # Both order the start as `after` does; `requires` also binds the unit's run to the other
    # unit's (engine/ordering.py), `wants` does not.
    requires: list[UnitName] = Field(default_factory=list)
    wants: list[UnitName] = Field(default_factory=list)
    # None: the daemon config's `output` (a change there restarts no unit).
    output: Output | None = None

    @property
    def starts_after(self) -> list[str]:
        """Every unit this one's start waits for: `after`, `requires` and `wants`, once each."""
        return list(dict.fromkeys([*self.after, *self.requires, *self.wants]))

    @field_validator("exec")
    @classmethod
    def _exec(cls, argv: list[str]) -> list[str]:
        if not argv[0].startswith("/"):
            # No $PATH lookup: the sandbox's view of the filesystem is not the caller's.
            raise keyed_error("[0]", f"must be an absolute path, got {argv[0]!r}")
        if any("\0" in arg for arg in argv):
            raise ValueError("an argument contains a NUL byte")
        return argv

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        for key, value in env.items():
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"invalid environment variable name {key!r}")
            if "\0" in value:
                raise ValueError(f"the value of {key} contains a NUL byte")
        return env

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str) -> str:
        return _absolute_path(value)

    @field_validator("user", "group", mode="before")
    @classmethod
    def _principal(cls, value: object) -> object:
        # `user = 1000` in TOML is an int; keep one type (numeric strings mean ids).
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < 2**32 - 1:
                raise ValueError(f"id {value} is out of range")
            return str(value)
        if isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}", value):
            raise ValueError(f"{value!r} is not a valid user or group name")
        return value

    @field_validator("after", "requires", "wants")
    @classmethod
    def _after(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("lists a unit twice")
        return names


class Device(Section):
    path: AbsolutePath
    access: str = "rw"

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        path = _absolute_path(value)
        if not path.startswith("/dev/") or path == "/dev/":
            raise ValueError(f"device path {value!r} must be under /dev/")
        return path

    @field_validator("access")
    @classmethod
    def _access(cls, value: str) -> str:
        if not value or not re.fullmatch(r"[rwm]{1,3}", value) or len(set(value)) != len(value):
            raise ValueError(f'access {value!r} must be a combination of r, w and m, e.g. "rw"')
        return "".join(c for c in "rwm" if c in value)


class BindMount(Section):
    type: Literal["bind"] = "bind"
    source: AbsolutePath
    target: AbsolutePath
    read_only: bool = True
    # With a user namespace: "host" makes the bind idmapped, so ids inside are the host's
    # (root inside reads and writes there as the host's root: weaker, the operator's choice);
    # unset, the service's files there are owned by its mapped ids on the host.
    idmap: Literal["host"] | None = None

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        return _outside_kernel_trees(_absolute_path(value), "source")

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        return _outside_kernel_trees(_absolute_path(value), "target")


class TmpfsMount(Section):
    type: Literal["tmpfs"]
    target: AbsolutePath
    size: Size = 64 << 20
    mode: int = Field(default=0o1777, ge=0, le=0o7777)

    @model_validator(mode="before")
    @classmethod
    def _no_idmap(cls, data: Any) -> Any:
        if isinstance(data, dict) and "idmap" in data:
            raise keyed_error(
                "idmap", "only a bind mount can be idmapped: a tmpfs is the sandbox's own"
            )
        return data

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        return _outside_kernel_trees(_absolute_path(value), "target")

    @field_validator("size")
    @classmethod
    def _size(cls, value: int | None) -> int:
        return _tmpfs_size(value)


def _mount_kind(value: object) -> object:
    # Without a `type`, a mount is a bind mount: fill it in so the union picks one model and the
    # error names the real problem instead of listing both alternatives.
    if isinstance(value, dict) and "type" not in value:
        return {"type": "bind", **value}
    return value


Mount = Annotated[BindMount | TmpfsMount, Field(discriminator="type"), BeforeValidator(_mount_kind)]


# A user namespace's range (unit/userns.py): 65536 ids cover every 16-bit uid an image uses.
USERNS_SIZE = 65536
MAX_HOST_ID = 2**32 - 2  # (uid_t)-1 means "no id" and cannot be mapped


class UserNamespaceRange(Section):
    """Host ids base..base+size-1, as uid and gid 0..size-1 inside."""

    base: int = Field(ge=1, le=MAX_HOST_ID)
    size: int = Field(default=USERNS_SIZE, ge=1, le=USERNS_SIZE * 256)

    @model_validator(mode="after")
    def _fits(self) -> UserNamespaceRange:
        if self.base + self.size - 1 > MAX_HOST_ID:
            raise keyed_error("size", f"base + size - 1 passes the last host id {MAX_HOST_ID}")
        return self


class Sandbox(Section):
    root: str = "host"
    # An OCI image layout ("PATH[:TAG]") or "docker-archive:PATH": its layers are the root, as
    # read-only overlay lower layers (images/); read at load time by unit/imagedefaults.py.
    image: str | None = None
    overlay: bool = False
    hostname: str | None = None  # None: the unit name
    namespaces: list[Namespace] = Field(default_factory=lambda: list(DEFAULT_NAMESPACES))
    init: bool = False
    read_only: bool = True
    devices: list[Device] = Field(default_factory=list)
    mounts: list[Mount] = Field(default_factory=list)
    tmp_size: Size = TMP_SIZE
    # None: "pick" when `namespaces` lists "user" (the default list does), else the host's ids
    # (unit/userns.py).
    user_namespace: Literal["pick", "host"] | UserNamespaceRange | None = None

    @field_validator("user_namespace", mode="before")
    @classmethod
    def _user_namespace(cls, value: object) -> object:
        # One message per mistake, naming the key, instead of one per member of the union.
        if value is None or value in ("pick", "host") or isinstance(value, UserNamespaceRange):
            return value
        if not isinstance(value, dict):
            raise ValueError(
                f'must be "pick", "host" or a table such as {{ base = 1048576, size = 65536 }}, '
                f"got {value!r}"
            )
        try:
            return UserNamespaceRange.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or first["ctx"].get("key", "")
            message = first["msg"].removeprefix("Value error, ")
            if first["type"] == "extra_forbidden":
                message = "unknown key" + _did_you_mean(key, ["base", "size"])
            elif first["type"] == "unit_value":
                key = first["ctx"]["key"]
            raise keyed_error(key, message) from None

    @field_validator("tmp_size")
    @classmethod
    def _tmp_size(cls, value: int | None) -> int:
        return _tmpfs_size(value)

    @field_validator("root")
    @classmethod
    def _root(cls, value: str) -> str:
        if value == "host":
            return value
        if not value.startswith("/"):
            raise ValueError(f'root must be "host" or an absolute directory, got {value!r}')
        path = _absolute_path(value)
        if path == "/":
            raise ValueError('root = "/" would expose the whole host; use root = "host"')
        return path

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        return None if value is None else str(parse_ref(value))

    @model_validator(mode="after")
    def _image_or_root(self) -> Sandbox:
        if self.image is not None and self.root != "host":
            raise keyed_error(
                "image", "image and root are mutually exclusive: the image's layers are the root"
            )
        return self

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", value):
            raise ValueError(f"{value!r} is not a valid hostname")
        return value

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a namespace twice")
        for needed in ("pid", "mount"):
            if needed not in value:
                raise ValueError(
                    f'"{needed}" is required: the service runs as PID 1 of its own root'
                )
        return sorted(value, key=NAMESPACES.index)

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: list[Device]) -> list[Device]:
        paths = [d.path for d in value]
        if len(set(paths)) != len(paths):
            raise ValueError("lists a device twice")
        return value

    @field_validator("mounts")
    @classmethod
    def _mounts(cls, value: list[BindMount | TmpfsMount]) -> list[BindMount | TmpfsMount]:
        seen: set[str] = set()
        for mount in value:
            if mount.target in seen:
                raise ValueError(f"two mounts have the target {mount.target!r}")
            if mount.target == "/":
                raise ValueError("a mount cannot replace the root; use sandbox.root")
            seen.add(mount.target)
        return value

    @model_validator(mode="after")
    def _idmap_needs_userns(self) -> Sandbox:
        for i, mount in enumerate(self.mounts):
            if isinstance(mount, BindMount) and mount.idmap and "user" not in self.namespaces:
                raise keyed_error(
                    f"mounts.{i}.idmap",
                    'idmap = "host" needs a user namespace ("user" in namespaces): without '
                    "one the sandbox's ids are the host's already",
                )
        return self


_CPU_LIST = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


def _cpu_list(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.replace(" ", "")
    if not _CPU_LIST.fullmatch(text):
        raise ValueError(f'{value!r} is not a list such as "0-1,3"')
    for part in text.split(","):
        low, _, high = part.partition("-")
        if high and int(high) < int(low):
            raise ValueError(f"range {part!r} runs backwards")
    return text


class Resources(Section):
    memory_max: Size = None
    memory_high: Size = None
    swap_max: Size = None
    cpu_max: float | None = Field(default=None, gt=0, le=4096)
    cpu_weight: int = Field(default=100, ge=1, le=10000)
    pids_max: int | None = Field(default=1024, ge=1, le=4_194_304)
    io_weight: int = Field(default=100, ge=1, le=10000)
    cpus: str | None = None
    mems: str | None = None

    @field_validator("pids_max", mode="before")
    @classmethod
    def _pids_max(cls, value: object) -> object:
        return None if value == "max" else value

    @field_validator("cpus", "mems")
    @classmethod
    def _cpuset(cls, value: str | None) -> str | None:
        return _cpu_list(value)

    @field_validator("memory_max")
    @classmethod
    def _memory_max(cls, value: int | None) -> int | None:
        if value is not None and value < (4 << 20):
            raise ValueError(f"{format_size(value)} is below 4M: nothing can start")
        return value

    @field_validator("memory_high")
    @classmethod
    def _memory_high(cls, value: int | None, info: ValidationInfo) -> int | None:
        # memory_max is declared first, so it is in info.data here (when it was valid).
        memory_max = info.data.get("memory_max")
        if value is not None and memory_max is not None and value > memory_max:
            raise ValueError(
                f"memory_high ({format_size(value)}) is above memory_max "
                f"({format_size(memory_max)}): the hard limit would hit first"
            )
        return value


class Restart(Section):
    policy: Literal["no", "on-failure", "always"] = "on-failure"
    delay: Duration = 0.1
    max_delay: Duration = 300.0
    reset_after: Duration = 600.0
    burst: int = Field(default=5, ge=1, le=10000)
    interval: Duration = 60.0

    @model_validator(mode="after")
    def _delays(self) -> Restart:
        if self.delay > self.max_delay:
            raise keyed_error(
                "delay",
                f"delay ({format_duration(self.delay)}) is above max_delay "
                f"({format_duration(self.max_delay)})",
            )
        return self


class Oom(Section):
    policy: Literal["restart", "stop", "continue"] = "restart"
    # Acting before the OOM killer does (unit/pressure.py): None means no pressure watch.
    pressure_limit: PressureLimitValue | None = None
    pressure_action: PressureAction = "restart"
    pressure_duration: Duration = 10.0

    @model_validator(mode="after")
    def _pressure_keys_need_a_limit(self) -> Oom:
        # A default written out (`cat --effective`, a unit written back) is not a mistake.
        if self.pressure_limit is None:
            for key in ("pressure_action", "pressure_duration"):
                if getattr(self, key) != Oom.model_fields[key].default:
                    raise keyed_error(key, f"{key} is only used with pressure_limit")
        return self


class Security(Section):
    # None: not set in the file, DEFAULT_CAPABILITIES for root and nothing for another user.
    # Set (even to the default list): exactly these, for any user (as ambient for non-root).
    capabilities: list[Capability] | None = None
    no_new_privileges: bool = True
    seccomp: Literal["default", "unconfined"] = "default"

    @field_validator("capabilities")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else sorted(set(value), key=CAPABILITIES.index)


class Health(Section):
    exec: list[str] | None = Field(default=None, min_length=1)
    tcp: int | None = Field(default=None, ge=1, le=65535)
    http: str | None = None
    interval: Duration = 10.0
    timeout: Duration = 2.0
    retries: int = Field(default=3, ge=1, le=1000)
    start_period: Duration = 0.0

    @model_validator(mode="after")
    def _one_probe(self) -> Health:
        kinds = [k for k in ("exec", "tcp", "http") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("set exactly one of exec, tcp or http")
        if self.exec is not None and not self.exec[0].startswith("/"):
            raise keyed_error("exec[0]", f"must be an absolute path, got {self.exec[0]!r}")
        if self.http is not None and not re.match(r"https?://[^/]+", self.http):
            raise keyed_error(
                "http", f'http must be a URL such as "http://127.0.0.1:8080/", not {self.http!r}'
            )
        for key in ("interval", "timeout"):
            if getattr(self, key) <= 0:
                raise keyed_error(key, f"{key} must be above zero")
        return self


# glibc reads at most this many nameservers (MAXNS in resolv.h); more would be silently unused.
MAX_NAMESERVERS = 3
_DOMAIN = re.compile(r"(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                     r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?")  # fmt: skip


Published = Annotated[
    PublishedPort, BeforeValidator(parse_published_port), PlainSerializer(str, return_type=str)
]


class Network(Section):
    mode: Literal["none", "host", "bridge"] = "none"
    address: str | None = None
    address6: str | None = None  # needs the daemon's subnet6
    # Masquerade the sandbox's traffic leaving the host; None: the default, on in bridge mode
    # (a spec written back must read back in every mode, so the default is not spelled out).
    outbound: bool | None = None
    ports: list[Published] = Field(default_factory=list, max_length=256)
    # None: not set (the host's servers, see linux/resolvconf.py).
    dns: list[str] | None = Field(default=None, min_length=1, max_length=MAX_NAMESERVERS)
    dns_search: list[str] | None = Field(default=None, max_length=6)

    @field_validator("address6")
    @classmethod
    def _address6(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            iface = ipaddress.IPv6Interface(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IPv6 address with prefix, e.g. fd00:88::10/64"
            ) from None
        if "/" not in value:
            raise ValueError(f"{value!r} needs a prefix length, e.g. {value}/64")
        return str(iface)

    @field_validator("dns")
    @classmethod
    def _dns(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        servers = []
        for entry in value:
            try:
                ip = ipaddress.ip_address(entry)
            except ValueError:
                raise ValueError(
                    f'{entry!r} is not an IP address, e.g. "192.0.2.53" or "2001:db8::53"'
                ) from None
            if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
                raise ValueError(f"{entry!r} names a host interface, which the sandbox lacks")
            servers.append(str(ip))
        return servers

    @field_validator("dns_search")
    @classmethod
    def _dns_search(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            if not _DOMAIN.fullmatch(entry):
                raise ValueError(f'{entry!r} is not a domain name such as "example.internal"')
        return value

    @property
    def nat_outbound(self) -> bool:
        """Whether the unit's traffic may leave the host (outbound NAT)."""
        return self.mode == "bridge" and self.outbound is not False

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            iface = ipaddress.IPv4Interface(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IPv4 address with prefix, e.g. 10.88.0.10/16"
            ) from None
        if "/" not in value:
            raise ValueError(f"{value!r} needs a prefix length, e.g. {value}/16")
        return str(iface)

    @model_validator(mode="after")
    def _address_needs_bridge(self) -> Network:
        if self.mode == "bridge":
            for i, port in enumerate(self.ports):
                for j in range(i):
                    if port.overlaps(self.ports[j]):
                        raise keyed_error(
                            f"ports[{i}]", f"{port} overlaps ports[{j}] ({self.ports[j]})"
                        )
        for key in ("address", "address6", "outbound", "ports"):
            if getattr(self, key) not in (None, []) and self.mode != "bridge":
                raise keyed_error(key, f'{key} is only used with mode = "bridge"')
        for key in ("dns", "dns_search"):
            if getattr(self, key) is None or self.mode == "bridge":
                continue
            if self.mode == "host":
                raise keyed_error(
                    key,
                    f'{key} is only used with mode = "bridge"; with mode = "host" the sandbox '
                    "sees the host's own /etc/resolv.conf",
                )
            raise keyed_error(
                key, f'{key} is only used with mode = "bridge"; mode = "none" has no network'
            )
        return self


class UnitFile(Section):
    service: Service
    sandbox: Sandbox = Field(default_factory=Sandbox)
    resources: Resources = Field(default_factory=Resources)
    restart: Restart = Field(default_factory=Restart)
    oom: Oom = Field(default_factory=Oom)
    security: Security = Field(default_factory=Security)
    health: Health | None = None
    network: Network = Field(default_factory=Network)
    credentials: dict[str, Credential] = Field(default_factory=dict)
    listen: list[Listen] = Field(default_factory=list, max_length=64)

    @field_validator("credentials")
    @classmethod
    def _credential_names(cls, value: dict[str, Credential]) -> dict[str, Credential]:
        for name in value:
            check_name(name)
        return value

    @model_validator(mode="after")
    def _listen_names(self) -> UnitFile:
        names = [entry.fd_name() for entry in self.listen]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise keyed_error(f"listen.{i}.name", f"{name!r} is used twice")
        return self

    @model_validator(mode="after")
    def _dns_needs_host_root(self) -> UnitFile:
        # A host root's /etc is the daemon's to write, and so is an image's upper layer (the
        # unit's own; the shared layers are never written). A root directory is the
        # operator's (written into by nothing) and brings its own /etc/resolv.conf.
        for key in ("dns", "dns_search"):
            if getattr(self.network, key) is None or self.sandbox.image is not None:
                continue
            if self.sandbox.root != "host":
                raise keyed_error(
                    f"network.{key}",
                    f'{key} needs root = "host" or an image: a root directory keeps its own '
                    "/etc/resolv.conf, which sandboxd does not write into",
                )
        return self

    @model_validator(mode="before")
    @classmethod
    def _net_namespace(cls, data: Any) -> Any:
        # The net namespace follows [network].mode: "host" shares the host's, the others need
        # their own. Only an explicit contradiction is an error.
        if not isinstance(data, dict):
            return data
        network, sandbox = data.get("network"), data.get("sandbox")
        mode = network.get("mode", "none") if isinstance(network, dict) else "none"
        if sandbox is not None and not isinstance(sandbox, dict):
            return data  # the Sandbox model reports the wrong type
        sandbox = sandbox or {}
        namespaces = sandbox.get("namespaces")
        if mode == "host":
            if isinstance(namespaces, list) and "net" in namespaces:
                raise keyed_error("sandbox.namespaces", 'lists "net" but network.mode is "host"')
            if namespaces is None:
                sandbox = {**sandbox, "namespaces": [n for n in DEFAULT_NAMESPACES if n != "net"]}
                data = {**data, "sandbox": sandbox}
        elif isinstance(namespaces, list) and "net" not in namespaces:
            raise keyed_error(
                "sandbox.namespaces",
                f'network.mode = "{mode}" needs the "net" namespace here',
            )
        return _user_namespace(data, explicit=isinstance(namespaces, list))


def _user_namespace(data: dict[str, Any], explicit: bool) -> dict[str, Any]:
    """`user_namespace` and the "user" namespace, as `[network].mode` and "net": the default
    list has "user", `user_namespace = "host"` takes it out of the default list, and an
    explicit list is the operator's choice either way; only an explicit contradiction is an
    error."""
    sandbox = data.get("sandbox") or {}
    if not isinstance(sandbox, dict):
        return data
    chosen, namespaces = sandbox.get("user_namespace"), sandbox.get("namespaces")
    # With mode = "host" _net_namespace has put the default list (less "net") there already.
    listed = explicit and isinstance(namespaces, list) and "user" in namespaces
    if chosen == "host" and listed:
        raise keyed_error(
            "sandbox.user_namespace",
            'is "host" but sandbox.namespaces lists "user"; drop one of them',
        )
    if explicit and chosen not in (None, "host") and not listed:
        raise keyed_error(
            "sandbox.user_namespace",
            'asks for a user namespace but sandbox.namespaces does not list "user"; add it '
            "there (or leave namespaces out to get the default list with it)",
        )
    if explicit:
        return data  # without "user": host ids, as asked
    base = namespaces if isinstance(namespaces, list) else list(DEFAULT_NAMESPACES)
    if chosen == "host":
        wanted = [n for n in base if n != "user"]
    else:
        wanted = [*base, "user"] if "user" not in base else base
    return {**data, "sandbox": {**sandbox, "namespaces": wanted}}
