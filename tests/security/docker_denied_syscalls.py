"""What Docker's default seccomp profile refuses on x86_64: facts for the tests, not code.

Source: github.com/moby/profiles, seccomp/default.json at commit cd3bed8 (2026-06-30; moby/moby
vendors the same file as github.com/moby/profiles/seccomp v0.2.3), read on 2026-12-06.

Docker's profile is an allowlist whose default answer is EPERM. DENIED holds every x86_64
syscall (the Linux 6.19 table) that a container with Docker's default capabilities
(DEFAULT_CAPS) does not get: named in no unconditional allow group, in no group for amd64, and
in no group that one of DEFAULT_CAPS unlocks. Groups gated on a minimum kernel count as allowed
(every kernel we support is newer). Syscalls newer than the profile itself (file_getattr,
file_setattr, listns, open_tree_attr) are unknown to it, hence refused too. The numbers are the
x86_64 ones. Standard library only: the in-sandbox probe imports this with the host's python3.
"""

from __future__ import annotations

DEFAULT_CAPS = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)  # fmt: skip

DENIED = {
    "_sysctl": 156, "acct": 163, "add_key": 248, "afs_syscall": 183, "bpf": 321,
    "clock_settime": 227, "create_module": 174, "delete_module": 176, "fanotify_init": 300,
    "file_getattr": 468, "file_setattr": 469, "finit_module": 313, "fsconfig": 431,
    "fsmount": 432, "fsopen": 430, "fspick": 433, "get_kernel_syms": 177, "get_mempolicy": 239,
    "getpmsg": 181, "init_module": 175, "io_uring_enter": 426, "io_uring_register": 427,
    "io_uring_setup": 425, "ioperm": 173, "iopl": 172, "kcmp": 312, "kexec_file_load": 320,
    "kexec_load": 246, "keyctl": 250, "listns": 470, "lookup_dcookie": 212,
    "lsm_get_self_attr": 459, "lsm_list_modules": 461, "lsm_set_self_attr": 460, "mbind": 237,
    "migrate_pages": 256, "mount": 165, "mount_setattr": 442, "move_mount": 429,
    "move_pages": 279, "nfsservctl": 180, "open_by_handle_at": 304, "open_tree": 428,
    "open_tree_attr": 467, "perf_event_open": 298, "pidfd_getfd": 438, "pivot_root": 155,
    "process_madvise": 440, "putpmsg": 182, "query_module": 178, "quotactl": 179,
    "quotactl_fd": 443, "reboot": 169, "request_key": 249, "security": 185, "set_mempolicy": 238,
    "set_mempolicy_home_node": 450, "setdomainname": 171, "sethostname": 170, "setns": 308,
    "settimeofday": 164, "swapoff": 168, "swapon": 167, "sysfs": 139, "syslog": 103,
    "tuxcall": 184, "umount2": 166, "unshare": 272, "uprobe": 336, "uselib": 134,
    "userfaultfd": 323, "ustat": 136, "vhangup": 153, "vserver": 236,
}  # fmt: skip

# Refused with ENOSYS rather than EPERM (so libc falls back to clone).
ENOSYS = {"clone3": 435}

# Allowed only with some arguments:
# - clone(2) when its flags (argument 0) have none of these bits: the namespace flags;
CLONE_REFUSED_FLAGS = 0x7E020000
# - personality(2) with exactly one of these values (0xffffffff only reads the persona);
PERSONALITY_ALLOWED = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
# - socket(2) in any family but these.
SOCKET_REFUSED_FAMILIES = {"AF_ALG": 38, "AF_VSOCK": 40}

NR = {"clone": 56, "personality": 135, "socket": 41}
