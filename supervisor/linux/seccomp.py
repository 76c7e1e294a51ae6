"""The default seccomp profile: allow by default, refuse what administers the kernel.

Docker's default profile is an allowlist; ours is the equivalent denylist for a host service
sandbox. It refuses at least everything Docker's profile refuses to a container holding Docker's
default capabilities (tests/security/docker_denied_syscalls.py keeps that list and its source;
tests/security/test_seccomp_docker.py calls each one inside a real sandbox). Unlike Docker's, it
does not depend on the unit's capabilities: a unit granted CAP_SYS_ADMIN still cannot mount.
Each group names the threat it closes. Compiled once per process with libseccomp (pyseccomp
binding) in the daemon; the forked child only loads the resulting BPF bytes.

A denylist is only as good as its knowledge of the syscall table, so what it cannot name is
closed two ways:
- Architecture: only the native ABI is allowed. A syscall made through another ABI (int 0x80
  on x86_64, or the x32 bit) would bypass rules keyed on native numbers, so it kills the
  process (libseccomp's bad-arch action).
- Newer syscalls (x86_64): a native number outside the table this profile was written against
  (`X86_64_TABLE`) answers ENOSYS, as if the kernel were older. Programs fall back to the old
  interface, and nothing a newer kernel adds is allowed before someone has decided on it.
  Docker's runtime answers syscalls newer than its profile the same way.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import struct
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

# Refused with EPERM, whatever the arguments.
DENIED: dict[str, tuple[str, ...]] = {
    # New mounts or a new root would undo the root we built (and reach host filesystems).
    "mount": (
        "mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig",
        "fsmount", "fspick", "move_mount", "open_tree", "open_tree_attr", "mount_setattr",
    ),
    # New namespaces: a user namespace gives back every capability over new kernel attack
    # surface (the classic userns LPE path); setns could join a namespace an fd leaked; listns
    # enumerates the host's namespaces.
    "namespaces": ("unshare", "setns", "listns"),
    # Loading code into the kernel or replacing it.
    "kernel": (
        "init_module", "finit_module", "delete_module", "create_module", "query_module",
        "get_kernel_syms", "kexec_load", "kexec_file_load", "bpf", "reboot", "uselib",
    ),
    # io_uring performs its operations in kernel context where no seccomp filter looks (a rule
    # on openat does not stop IORING_OP_OPENAT), and it has been a steady source of kernel
    # exploits.
    "io_uring": ("io_uring_setup", "io_uring_enter", "io_uring_register"),
    # Kernel keyrings are not namespaced: keys of other sandboxes and the host.
    "keys": ("add_key", "request_key", "keyctl"),
    # Inspecting or editing other processes (memory, file descriptors, page advice), or
    # watching whole mounts and filesystems, the host's files behind our binds included.
    # (Linux lets uprobe past every filter and answers it only inside a uprobe trampoline;
    # the rule is for a kernel that would not.)
    "tracing": (
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "perf_event_open",
        "lookup_dcookie", "userfaultfd", "pidfd_getfd", "process_madvise", "fanotify_init",
        "uprobe",
    ),
    # File handles bypass the mount tree entirely (the "shocker" escape).
    "handles": ("open_by_handle_at", "name_to_handle_at"),
    # The clock, swap, accounting, quotas and the syslog are host-wide; so is the host name
    # when a unit shares the host's UTS namespace (the launcher sets ours before the filter).
    "host": (
        "clock_settime", "clock_adjtime", "settimeofday", "stime", "adjtimex", "swapon",
        "swapoff", "acct", "quotactl", "quotactl_fd", "syslog", "sysfs", "_sysctl", "ustat",
        "nfsservctl", "vhangup", "sethostname", "setdomainname",
    ),
    # Raw hardware, and NUMA placement: where the memory of a process (or another one's)
    # lives is the host's decision.
    "hardware": (
        "iopl", "ioperm", "vm86", "vm86old", "move_pages", "migrate_pages", "mbind",
        "set_mempolicy", "get_mempolicy", "set_mempolicy_home_node",
    ),
    # Security modules' per-process attributes: a label is set for the service, not by it.
    "lsm": ("lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules"),
    # Numbers reserved for out-of-tree code, no syscall in Linux: shut, in case a kernel adds one.
    "reserved": ("afs_syscall", "getpmsg", "putpmsg", "security", "tuxcall", "vserver"),
}  # fmt: skip

# Refused with ENOSYS, as a kernel without them would: each has an older equivalent that
# programs fall back to.
ENOSYS = (
    # clone3 passes its flags in memory a filter cannot read; libc falls back to clone, whose
    # namespace flags are checked below.
    "clone3",
    # Newer than Docker's list (so refused there as unknown); the FS_IOC_FS[GS]ETXATTR ioctls
    # they duplicate stay allowed.
    "file_getattr", "file_setattr",
)  # fmt: skip

# The native table the profile was written against (Linux 6.19, x86_64): first and last number
# of each run of assigned syscalls. Numbers outside answer ENOSYS (see the module docstring);
# when a kernel adds syscalls, decide on each (DENIED, ENOSYS or allowed) and extend this.
X86_64_TABLE = ((0, 336), (424, 470))
# x86_64 numbers of the syscalls above that an older libseccomp cannot name yet.
X86_64_NUMBERS = {
    "uprobe": 336, "lsm_get_self_attr": 459, "lsm_set_self_attr": 460, "lsm_list_modules": 461,
    "open_tree_attr": 467, "file_getattr": 468, "file_setattr": 469, "listns": 470,
}  # fmt: skip
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000

# clone(2) flags that create namespaces; clone is otherwise fine (fork, threads).
_CLONE_NAMESPACE_FLAGS = (
    CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
    CLONE_NEWNET,
)  # fmt: skip
# Injecting keystrokes into a terminal the service shares with someone else.
_S_IFMT = 0o170000  # stat.S_IFMT is a function
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C
# socket(2) families refused: the kernel crypto API (AF_ALG: kernel attack surface no service
# needs) and VM sockets (AF_VSOCK: not namespaced; inside a VM they reach the hypervisor and
# the other guests' services).
_AF_ALG = 38
_AF_VSOCK = 40
# personality(2): the values Docker's profile allows are PER_LINUX (0), PER_LINUX32, UNAME26,
# both, and 0xffffffff (which only reads the persona). Every other flag changes how the kernel
# lays out or protects memory: ADDR_NO_RANDOMIZE turns ASLR off, READ_IMPLIES_EXEC makes every
# readable mapping executable, MMAP_PAGE_ZERO maps page 0.
PERSONA_FLAGS = (0x0008, 0x0020000)  # PER_LINUX32, UNAME26
_LOW32 = 0xFFFFFFFF


def denied_syscalls() -> list[str]:
    return sorted({name for group in DENIED.values() for name in group})


def persona_rules() -> list[tuple[int, int]]:
    """(mask, value) pairs over personality's argument: a value matching any one is refused.

    The allowed set is "no bit outside PERSONA_FLAGS, or all 32 bits". libseccomp cannot AND
    two comparisons of one argument, so the complement is spelled as a union of single
    masked comparisons:
    - the other bits neither all clear nor all set: going round them in a cycle, some set bit
      is followed by a clear one (one rule per neighbouring pair, set then clear);
    - the other bits all set, yet not all 32: one of PERSONA_FLAGS is clear (one rule each).
    Values above 32 bits (the kernel reads an unsigned int) have a rule of their own.
    """
    free = sum(PERSONA_FLAGS)
    others = [1 << b for b in range(32) if not (1 << b) & free]
    rules = [(bit | after, bit) for bit, after in zip(others, others[1:] + others[:1], strict=True)]
    every_other = sum(others)
    rules += [(every_other | flag, every_other) for flag in PERSONA_FLAGS]
    return rules


@cache
def default_bpf() -> bytes:
    """The compiled default profile for the native architecture (cached: compile once)."""
    import pyseccomp as sc  # noqa: PLC0415  (only the daemon needs libseccomp, and only once)

    x86_64 = sc.system_arch() == sc.Arch.X86_64

    def number(name: str) -> int | None:
        nr = int(sc.resolve_syscall(sc.Arch.NATIVE, name))
        if nr < 0 and x86_64:
            return X86_64_NUMBERS.get(name)
        return nr if nr >= 0 else None  # None: not on this architecture (vm86 on x86_64)

    eperm = sc.ERRNO(errno.EPERM)
    filt = sc.SyscallFilter(sc.ALLOW)
    filt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    # A binary search over the syscall numbers instead of a linear chain: every allowed
    # syscall of every service runs this program, ~20 instructions instead of ~100.
    filt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
    for action, names in ((eperm, denied_syscalls()), (sc.ERRNO(errno.ENOSYS), sorted(ENOSYS))):
        for name in names:
            nr = number(name)
            if nr is not None:
                filt.add_rule(action, nr)
    for flag in _CLONE_NAMESPACE_FLAGS:
        filt.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # Device nodes: /dev is prepared before the filter loads; creating more is never needed and
    # would reach hardware the devices cgroup might not cover (v1 hosts, nodev gaps).
    for name, mode_arg in (("mknod", 1), ("mknodat", 2)):
        if number(name) is None:
            continue
        for kind in (stat.S_IFCHR, stat.S_IFBLK):
            filt.add_rule(eperm, name, sc.Arg(mode_arg, sc.MASKED_EQ, _S_IFMT, kind))
    for request in (_TIOCSTI, _TIOCLINUX):
        filt.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, _LOW32, request))
    # Compared on the low 32 bits, as the kernel reads the int: socket(1 << 32 | 38) is AF_ALG.
    for family in (_AF_ALG, _AF_VSOCK):
        filt.add_rule(eperm, "socket", sc.Arg(0, sc.MASKED_EQ, _LOW32, family))
    filt.add_rule(eperm, "personality", sc.Arg(0, sc.GT, _LOW32))
    for mask, value in persona_rules():
        filt.add_rule(eperm, "personality", sc.Arg(0, sc.MASKED_EQ, mask, value))
    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    try:
        filt.export_bpf(_Fd(fd))
        size = os.lseek(fd, 0, os.SEEK_END)
        program = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    return (unknown_syscall_guard(X86_64_TABLE) if x86_64 else b"") + program


# Classic BPF (linux/bpf_common.h) for the guard: load a word of seccomp_data, compare with a
# constant, jump, return.
_LD_W_ABS = 0x20
_JA, _JEQ, _JGT, _JGE = 0x05, 0x15, 0x25, 0x35
_RET_K = 0x06
_SECCOMP_RET_ERRNO = 0x00050000
_NR, _ARCH = 0, 4  # offsets in struct seccomp_data
_Target = int | str | None


def unknown_syscall_guard(table: tuple[tuple[int, int], ...]) -> bytes:
    """A BPF prefix: ENOSYS for a native x86_64 syscall number outside `table`'s runs.

    Everything else (another architecture, the x32 bit, a known number) falls through to the
    program that follows, libseccomp's, which needs nothing from the prefix: classic BPF
    jumps are relative and forward only, so the two concatenate as they are.
    """
    gaps = [(end + 1, start - 1) for (_, end), (start, _) in itertools.pairwise(table)]
    gaps.append((table[-1][1] + 1, _X32_SYSCALL_BIT - 1))
    # (code, k, jump if true, jump if false); targets are instruction indexes or "ret"/"end".
    prog: list[tuple[int, int, _Target, _Target]] = [
        (_LD_W_ABS, _ARCH, None, None),
        (_JEQ, _AUDIT_ARCH_X86_64, 2, "end"),
        (_LD_W_ABS, _NR, None, None),
        (_JGE, _X32_SYSCALL_BIT, "end", 4),  # x32: libseccomp's program kills it
    ]
    for lo, hi in gaps:
        at = len(prog)
        prog.append((_JGE, lo, at + 1, at + 2))  # below this gap: on to the next one
        prog.append((_JGT, hi, at + 2, "ret"))  # inside it: ENOSYS
    prog.append((_JA, 0, "end", None))
    labels = {"ret": len(prog), "end": len(prog) + 1}
    prog.append((_RET_K, _SECCOMP_RET_ERRNO | errno.ENOSYS, None, None))

    def offset(at: int, target: _Target) -> int:
        if target is None:
            return 0
        return (labels[target] if isinstance(target, str) else target) - (at + 1)

    out = b""
    for at, (code, k, jt, jf) in enumerate(prog):
        if code == _JA:  # an unconditional jump keeps its offset in k
            out += struct.pack("=HBBI", code, 0, 0, offset(at, jt))
        else:
            out += struct.pack("=HBBI", code, offset(at, jt), offset(at, jf), k)
    return out


class _Fd:
    """pyseccomp's export wants a file object; it only calls fileno()."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd
