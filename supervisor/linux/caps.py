"""Capabilities: names to bits, and the drop sequence that sets a process's five sets.

The bounding set is the unit's list: it stops a setuid-root binary or file capabilities from
handing back the rest (the threat: a service that regains CAP_SYS_ADMIN through an exec and
administers the host). Within it, a process running as uid 0 holds the whole list; any other
uid holds nothing unless the unit lists its capabilities explicitly, and then holds them in all
sets including ambient, which is what keeps them across execve for a non-root user (systemd's
AmbientCapabilities=). That is Docker's and Podman's rule for a non-root user, and it means
`user = "nobody"` really is unprivileged: it cannot setuid(0) back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from supervisor.linux.syscalls import (
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    PR_SET_KEEPCAPS,
    Syscalls,
)

# capabilities(7) numbering, <linux/capability.h>.
CAP_NUMBERS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}  # fmt: skip


def mask_of(names: Iterable[str]) -> int:
    """The bit mask of capability names (without the CAP_ prefix); KeyError for unknown names."""
    mask = 0
    for name in names:
        mask |= 1 << CAP_NUMBERS[name.upper().removeprefix("CAP_")]
    return mask


def names_of(mask: int) -> list[str]:
    return [name for name, bit in CAP_NUMBERS.items() if mask & (1 << bit)]


def last_cap(path: str = "/proc/sys/kernel/cap_last_cap") -> int:
    """The highest capability this kernel knows; read once by the daemon, before forking."""
    try:
        with open(path) as f:
            return int(f.read())
    except OSError:
        return max(CAP_NUMBERS.values())


@dataclass(frozen=True)
class CapPlan:
    bounding: int  # the most any process of the sandbox may ever hold
    root: int  # the sets of a process running as uid 0 (inside the sandbox)
    non_root: int  # the sets of any other uid: empty unless the unit lists capabilities
    last_cap: int  # the kernel's highest capability number

    @classmethod
    def for_unit(
        cls,
        listed: Iterable[str] | None,
        default: Iterable[str],
        last: int,
        exec_only: Iterable[str] = (),
    ) -> CapPlan:
        """A unit's plan: `listed` is its `capabilities` (None when the file does not set it,
        then `default` applies to root only); `exec_only` joins the bounding set alone (see
        sandbox/host/launch.py). KeyError for an unknown name."""
        mask = mask_of(default if listed is None else listed)
        return cls(mask | mask_of(exec_only), mask, 0 if listed is None else mask, last)

    def granted(self, uid: int) -> int:
        return self.root if uid == 0 else self.non_root


def drop_bounding(sys: Syscalls, plan: CapPlan) -> None:
    """Shrink the bounding set first, while still root with CAP_SETPCAP (needed to drop)."""
    for cap in range(plan.last_cap + 1):
        if not plan.bounding & (1 << cap):
            sys.prctl(PR_CAPBSET_DROP, cap)


def switch_user(sys: Syscalls, uid: int, gid: int, groups: list[int]) -> None:
    """setgroups/setresgid/setresuid, keeping the permitted set across the uid change.

    Groups before uid: once the uid is not 0 we lose CAP_SETGID. KEEPCAPS only spans the switch;
    left set, a later setuid in the service would keep privileges it meant to shed.
    """
    sys.prctl(PR_SET_KEEPCAPS, 1)
    sys.setgroups(groups)
    sys.setresgid(gid)
    sys.setresuid(uid)
    sys.prctl(PR_SET_KEEPCAPS, 0)


def set_sets(sys: Syscalls, keep: int, last_cap: int) -> None:
    """Permitted, effective, inheritable, then ambient: all equal to `keep`.

    capset can only lower permitted, so anything outside `keep` is gone for good. Ambient
    needs each capability in both permitted and inheritable, hence last. No clearing of the
    ambient set first: capset itself drops from it whatever is not both permitted and
    inheritable (security/commoncap.c, cap_capset), that is whatever is outside `keep`, and
    every capability in `keep` is raised next, so it ends equal to `keep` either way.
    """
    sys.capset(keep, keep, keep)
    for cap in range(last_cap + 1):
        if keep & (1 << cap):
            sys.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
