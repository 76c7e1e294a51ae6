"""Namespaces kept alive by a bind mount of their nsfs file onto a file of the daemon's, as
`ip netns add` keeps a network namespace: what the held user namespaces (helduserns.py) and
the held network namespaces (heldnetns.py) have in common.

The file lives in a root-only directory of the state dir: whoever can open it can enter the
namespace. A mount survives the daemon (not a reboot), so the next daemon finds it again.
"""

from __future__ import annotations

import contextlib
import os

from supervisor.linux.syscalls import MNT_DETACH, REAL, Syscalls, open_held_ns


def is_held(path: str, nstype: int) -> bool:
    """Whether a namespace of kind `nstype` (CLONE_NEW*) is mounted at `path`."""
    fd = open_held_ns(path, nstype)
    if fd is None:
        return False
    os.close(fd)
    return True


def drop(path: str, nstype: int, sys_: Syscalls = REAL) -> bool:
    """Unmount and remove `path`; True if a namespace was held there. Two makers that raced
    to hold one stacked two mounts: every one goes. MNT_DETACH: a process that has the file
    open keeps its fd, and the kernel frees the namespace with its last user."""
    held = False
    while is_held(path, nstype):
        held = True
        try:
            sys_.umount2(path, MNT_DETACH)
        except OSError:
            break  # not a mount point: a namespace file bound elsewhere, not ours to undo
    with contextlib.suppress(OSError):  # gone already, or EBUSY after the break above
        os.unlink(path)
    return held


def listed(directory: str) -> list[str]:
    """The names of the files in `directory`, sorted; none if it does not exist."""
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
