"""The daemon's own sysctl writes (a held network namespace's ping_group_range, the host's
ip_forward and a bridge's route_localnet), made through a procfs instance of their own.

Why not the host's /proc/sys: its procfs keeps one cached /proc/sys/net/ipv4 dentry per live
network namespace that ever looked one up there, all on one hash chain the kernel compares one
by one (Syscalls.fresh_proc_sys says more); a look-up by the daemon walked them all on its loop.
With 2000 such namespaces alive, the NAT table's check per unit took 0.50-0.66 ms of CPU
through the host's, 0.07-0.09 ms through its own (making the instance included; 0.03 ms
through the host's on a host without them), and making a held namespace 1.8-3.7 ms, now
0.85-1.3. An instance made for the call and closed after it holds only the dentries of that
call, so its look-up costs the same with 2 or 5000 namespaces, and closing it frees them
(it is mounted nowhere: no namespace ever shows it). A net sysctl opened through any procfs
instance is the caller's network namespace's at the open.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from supervisor.linux.syscalls import REAL, Syscalls


@contextlib.contextmanager
def opened(sys_: Syscalls = REAL) -> Iterator[int]:
    """An fd of a /proc/sys for the body's sysctls: a fresh procfs instance's, or the host's
    on a kernel that cannot make one (before 5.2, no fsopen). Closed after the body."""
    try:
        fd = sys_.fresh_proc_sys()
    except OSError:
        fd = sys_.open_path("/proc/sys", directory=True)
    try:
        yield fd
    finally:
        sys_.close(fd)


def ensure(sys_dir: int, key: str, value: str) -> bool:
    """Set the sysctl `key` (relative to `sys_dir`, "net/ipv4/ip_forward") to `value` unless
    it has it already; True if it was changed. OSError as the kernel says it."""
    fd = os.open(key, os.O_RDWR | os.O_CLOEXEC, dir_fd=sys_dir)
    try:
        if os.read(fd, 64).strip() == value.encode():
            return False
        # At offset 0: with kernel.sysctl_writes_strict (the default), a write past the
        # start of a number's file is ignored, and our read moved the offset.
        os.pwrite(fd, value.encode(), 0)
    finally:
        os.close(fd)
    return True
