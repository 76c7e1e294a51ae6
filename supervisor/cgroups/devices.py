"""The device allowlist of a unit cgroup: rules, the minimal default, the unit's own devices.

Threat: a device node is a door around every other layer. With CAP_MKNOD (or a node that is
already there, e.g. in a bind-mounted host directory) a sandboxed process that may open
`b 254:0` reads and writes the host's disk under the filesystem, and `c 1:1` (/dev/mem) is the
host's physical memory. Mount options (nodev) and the seccomp profile (no mknod) each close
part of that door; the devices cgroup closes all of it, in the kernel, for every process in
the cgroup whatever its capabilities: only the rules below may be opened (r/w) or created (m).

Both backends enforce the same list (v1: `devices.deny a` then `devices.allow` lines; v2: the
BPF program from `devices_bpf.py`). The default is exactly the nodes the launcher puts into the
sandbox's /dev, read/write and never mknod; a unit adds its `sandbox.devices`, resolved to
major:minor by stat() of the host path when its cgroup is set up.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from supervisor.errors import CgroupError

ACCESS_CHARS = "rwm"


class DeviceError(CgroupError):
    """A unit's device cannot be allowed: missing, not a device node, or a bad access string."""


@dataclass(frozen=True)
class DeviceAccess:
    """A unit's request (`sandbox.devices` entry): a host path and "r"/"w"/"m" letters."""

    path: str
    access: str = "rw"

    def __post_init__(self) -> None:
        check_access(self.access)
        if not os.path.isabs(self.path):
            raise DeviceError(f"device path {self.path!r} is not absolute")


@dataclass(frozen=True)
class DeviceRule:
    """One allow rule; `None` for major or minor is the wildcard `*`."""

    kind: Literal["c", "b"]
    major: int | None
    minor: int | None
    access: str

    def __post_init__(self) -> None:
        check_access(self.access)
        for value in (self.major, self.minor):
            if value is not None and not 0 <= value < 1 << 32:
                raise DeviceError(f"device number {value} out of range")

    def v1_line(self) -> str:
        """The rule in devices.allow / devices.list syntax: `c 136:* rw`."""
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.kind} {major}:{minor} {self.access}"


def check_access(access: str) -> str:
    if not access or any(c not in ACCESS_CHARS for c in access) or len(set(access)) != len(access):
        raise DeviceError(
            f'device access {access!r} must be a combination of r, w and m, e.g. "rw"'
        )
    return access


def _char(major: int, minor: int | None) -> DeviceRule:
    return DeviceRule("c", major, minor, "rw")


# The launcher's minimal /dev (sandbox/host/hostlayout.py DEVICES, devpts): null, zero, full,
# random, urandom, tty, ptmx and the pty slaves of the sandbox's own devpts instance (136-143
# are all pty majors; one is 1M slaves, plenty). No "m": nothing in a sandbox needs to create nodes.
DEFAULT_RULES: tuple[DeviceRule, ...] = (
    _char(1, 3),  # /dev/null
    _char(1, 5),  # /dev/zero
    _char(1, 7),  # /dev/full
    _char(1, 8),  # /dev/random
    _char(1, 9),  # /dev/urandom
    _char(5, 0),  # /dev/tty
    _char(5, 2),  # /dev/ptmx (and /dev/pts/ptmx)
    _char(136, None),  # /dev/pts/*
)


def node_problem(path: str) -> str | None:
    """Why `path` cannot be allowed on this host ("does not exist", "is not a device node"),
    or None. For a host check in `sandboxctl validate`, which only warns."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist on this host"
    except OSError as err:
        return f"{path}: {os.strerror(err.errno or 0)}"
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        return f"{path} is not a device node on this host (not a character or block device)"
    return None


def rule_for(device: DeviceAccess) -> DeviceRule:
    """Resolve one request by stat() of the host path (following symlinks, as the bind mount
    of the node into the sandbox does)."""
    problem = node_problem(device.path)
    if problem is not None:
        raise DeviceError(f"sandbox.devices: {problem}")
    st = os.stat(device.path)
    kind: Literal["c", "b"] = "c" if stat.S_ISCHR(st.st_mode) else "b"
    return DeviceRule(kind, os.major(st.st_rdev), os.minor(st.st_rdev), device.access)


def allowlist(devices: Iterable[DeviceAccess]) -> tuple[DeviceRule, ...]:
    """The default rules plus the unit's devices, in a stable order, one rule per node: two
    requests for the same node merge their access, as the v1 kernel does in devices.list."""
    wanted = tuple(rule_for(d) for d in devices)
    if not wanted:  # most units: the defaults, merged once, not at every launch
        return _DEFAULTS
    return _merged((*DEFAULT_RULES, *wanted))


def _merged(rules: Iterable[DeviceRule]) -> tuple[DeviceRule, ...]:
    merged: dict[tuple[Literal["c", "b"], int | None, int | None], str] = {}
    for rule in rules:
        key = (rule.kind, rule.major, rule.minor)
        both = merged.get(key, "") + rule.access
        merged[key] = "".join(c for c in ACCESS_CHARS if c in both)
    return tuple(DeviceRule(k, major, minor, a) for (k, major, minor), a in merged.items())


_DEFAULTS = _merged(DEFAULT_RULES)


def v1_writes(rules: Iterable[DeviceRule]) -> list[tuple[str, str]]:
    """devices.deny "a" (deny everything, including what the parent allows), then one
    devices.allow write per rule: the kernel takes one rule per write."""
    return [("devices.deny", "a")] + [("devices.allow", r.v1_line()) for r in rules]


def v1_matches(devices_list: str, rules: Iterable[DeviceRule]) -> bool:
    """Whether a cgroup's devices.list already is exactly `rules` (nothing to rewrite)."""
    return set(devices_list.split("\n")) - {""} == {r.v1_line() for r in rules}
