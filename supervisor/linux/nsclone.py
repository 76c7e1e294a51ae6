"""A child made in new namespaces that has exited already: a handle on them, without a fork.

Making a user namespace with host ids mapped needs two processes: one in the new namespace,
and one with privilege in its parent that writes its maps (user_namespaces(7)). A forked
Python child for the first costs its parent the copy of every page table (a launcher maps the
fork server's whole interpreter) and the child its copy-on-write faults and its exit: about
1.7 ms of CPU a launch, on every first start of a unit.

`exited_child` clones a child with CLONE_VM | CLONE_VFORK: it shares our memory (nothing is
copied), runs libc's sched_yield, not one instruction of Python, on a small stack of its own,
and exits, while we are suspended (CLONE_VFORK), so nothing of ours runs beside it. Its zombie
keeps its credentials, and with them its user namespace, reachable through /proc/<pid>/ (the
maps, ns/user) until the caller reaps it; and keeps its PID from being reused meanwhile, so
/proc/<pid>/ cannot name another process. The caller must reap it (`os.waitpid`) in every path.
SIGCHLD must not be ignored (SIG_IGN reaps it at once: /proc/<pid>/ is then gone, ENOENT).
"""

from __future__ import annotations

import ctypes
import os
import signal

_CLONE_VM = 0x00000100
_CLONE_VFORK = 0x00004000
_STACK_SIZE = 16384  # sched_yield and glibc's clone trampoline use a few hundred bytes

_libc = ctypes.CDLL(None, use_errno=True)
_clone = _libc.clone
_clone.restype = ctypes.c_int
_clone.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
# A C function, not a ctypes callback: a callback would run Python in the child, on memory it
# shares with us. sched_yield returns 0 (the child's exit status) and touches no libc state.
_CHILD = ctypes.cast(_libc.sched_yield, ctypes.c_void_p)
# One stack for every clone: made at import (the fork server's, before it forks), used by one
# child at a time (CLONE_VFORK: the call returns only once that child has exited).
_stack = ctypes.create_string_buffer(_STACK_SIZE)
_STACK_TOP = (ctypes.addressof(_stack) + _STACK_SIZE - 64) & ~15  # grows down, 16-aligned


def exited_child(ns_flags: int) -> int:
    """The PID of a child cloned into new namespaces `ns_flags` (CLONE_NEW*), already exited
    and not yet reaped; OSError if the kernel refuses."""
    pid = int(
        _clone(_CHILD, _STACK_TOP, ns_flags | _CLONE_VM | _CLONE_VFORK | signal.SIGCHLD, None)
    )
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"clone: {os.strerror(err)}")
    return pid
