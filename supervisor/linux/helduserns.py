"""User namespaces the daemon holds for its units' id ranges: one per range, made by the first
launch that needs it and joined by every later one.

Why: making a user namespace costs the launcher a fork (the throwaway child that unshares it,
linux/syscalls.py `make_userns`), the writes of its maps and a reap: about 1.5 ms, a fifth of
a whole launch. A unit's range is fixed (engine/idranges.py), so its namespace can be made
once: the launcher keeps it as `ip netns` keeps a network namespace, by bind-mounting its nsfs
file onto `<state_dir>/userns/<base>-<size>` (`Syscalls.hold_userns`), and the next launch
opens that file instead of making one.

Why that is as safe as a namespace per launch: a user namespace holds no process, mount or
file of its own; what a sandbox leaves behind dies with its PID, mount and network namespaces.
The held one only keeps the maps (the unit's range, never another unit's), and a user
namespace nobody holds cannot be entered: the file is in a root-only directory. It is dropped
(`drop`) when its range is given back or given to another unit (engine/idranges.py), so no two
units ever join the same one; a fresh daemon finds the files and keeps those of ranges it still
owns (same range, same maps). A running sandbox keeps its namespace alive without the file.
"""

from __future__ import annotations

import os

from supervisor.linux import heldns
from supervisor.linux.syscalls import CLONE_NEWUSER, REAL, Syscalls


def path_for(directory: str, base: int, size: int) -> str:
    return os.path.join(directory, f"{base}-{size}")


def range_of(name: str) -> tuple[int, int] | None:
    """(base, size) of a file `path_for` named; None for any other name."""
    base, sep, size = name.partition("-")
    if not (sep and base.isdigit() and size.isdigit()):
        return None
    return int(base), int(size)


def is_held(path: str) -> bool:
    return heldns.is_held(path, CLONE_NEWUSER)


def drop(path: str, sys_: Syscalls = REAL) -> bool:
    """Unmount and remove `path` (heldns.drop); True if a namespace was held there."""
    return heldns.drop(path, CLONE_NEWUSER, sys_)


listed = heldns.listed  # the files in a directory: one per held range
