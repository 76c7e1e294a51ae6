"""The default seccomp profile: allow by default, EPERM for what administers the kernel.

Docker's default profile is an allowlist; ours is the equivalent denylist for a host service
sandbox, covering at least everything Docker's profile refuses to a container without extra
capabilities. Each group names the threat it closes. Compiled once per process with libseccomp
(pyseccomp binding) in the daemon; the forked child only loads the resulting BPF bytes.

Architecture: only the native ABI is allowed. A syscall made through another ABI (int 0x80 on
x86_64, or the x32 bit) would bypass a denylist keyed on native numbers, so it kills the
process (libseccomp's bad-arch action).
"""

from __future__ import annotations

import errno
import os
import stat
from functools import cache

from supervisor.linux.syscalls import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
)

DENIED: dict[str, tuple[str, ...]] = {
    # New mounts or a new root would undo the root we built (and reach host filesystems).
    "mount": (
        "mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig",
        "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    ),
    # New namespaces: a user namespace gives back every capability over new kernel attack
    # surface (the classic userns LPE path); setns could join a namespace an fd leaked.
    "namespaces": ("unshare", "setns"),
    # Loading code into the kernel or replacing it.
    "kernel": (
        "init_module", "finit_module", "delete_module", "create_module", "query_module",
        "get_kernel_syms", "kexec_load", "kexec_file_load", "bpf", "reboot", "uselib",
    ),
    # Kernel keyrings are not namespaced: keys of other sandboxes and the host.
    "keys": ("add_key", "request_key", "keyctl"),
    # Inspecting or editing other processes' memory.
    "tracing": (
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "perf_event_open",
        "lookup_dcookie", "userfaultfd",
    ),
    # File handles bypass the mount tree entirely (the "shocker" escape).
    "handles": ("open_by_handle_at", "name_to_handle_at"),
    # The clock, swap, accounting, quotas and the syslog are host-wide.
    "host": (
        "clock_settime", "clock_adjtime", "settimeofday", "stime", "adjtimex", "swapon",
        "swapoff", "acct", "quotactl", "quotactl_fd", "syslog", "sysfs", "_sysctl", "ustat",
        "nfsservctl", "vhangup",
    ),
    # Raw hardware and NUMA placement of other processes' memory.
    "hardware": ("iopl", "ioperm", "move_pages", "vm86", "vm86old"),
}  # fmt: skip

# clone(2) flags that create namespaces; clone is otherwise fine (fork, threads).
_CLONE_NAMESPACE_FLAGS = (
    CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
    CLONE_NEWNET,
)  # fmt: skip
# Injecting keystrokes into a terminal the service shares with someone else.
_S_IFMT = 0o170000  # stat.S_IFMT is a function
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C


def denied_syscalls() -> list[str]:
    return sorted({name for group in DENIED.values() for name in group})


@cache
def default_bpf() -> bytes:
    """The compiled default profile for the native architecture (cached: compile once)."""
    import pyseccomp as sc  # noqa: PLC0415  (only the daemon needs libseccomp, and only once)

    eperm = sc.ERRNO(errno.EPERM)
    filt = sc.SyscallFilter(sc.ALLOW)
    filt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    for name in denied_syscalls():
        if sc.resolve_syscall(sc.Arch.NATIVE, name) < 0:
            continue  # not on this architecture (e.g. vm86 on x86_64)
        filt.add_rule(eperm, name)
    for flag in _CLONE_NAMESPACE_FLAGS:
        filt.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory a filter cannot read: answer ENOSYS so libc falls back
    # to clone, whose flags we can check (Docker does the same).
    if sc.resolve_syscall(sc.Arch.NATIVE, "clone3") >= 0:
        filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    # Device nodes: /dev is prepared before the filter loads; creating more is never needed and
    # would reach hardware the devices cgroup might not cover (v1 hosts, nodev gaps).
    for name, mode_arg in (("mknod", 1), ("mknodat", 2)):
        if sc.resolve_syscall(sc.Arch.NATIVE, name) < 0:
            continue
        for kind in (stat.S_IFCHR, stat.S_IFBLK):
            filt.add_rule(eperm, name, sc.Arg(mode_arg, sc.MASKED_EQ, _S_IFMT, kind))
    for request in (_TIOCSTI, _TIOCLINUX):
        filt.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    try:
        filt.export_bpf(_Fd(fd))
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


class _Fd:
    """pyseccomp's export wants a file object; it only calls fileno()."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd
