"""User namespaces the daemon holds for its units' id ranges: one per range, made by the first
launch that needs it and joined by every later one.

Why hold them: making a user namespace costs the launcher a clone (a child made in it that
exits at once, linux/nsclone.py), the writes of its maps, the open of its ns file and a reap;
a forked child it was, about 1.5 ms, a fifth of a whole launch, and ~0.1 ms without the fork.
A unit's range is fixed (engine/idranges.py), so its namespace can be made once and kept, as
`ip netns` keeps a network namespace, by a bind mount of its nsfs file; the next launch opens
that file instead of making one.

Where they are held: not in the host's mount table. Each bind mount there made that table one
mount longer per unit, and every launch copies the table (the launcher's holding mount
namespace, then the sandbox's) and PID 1 detaches it again: with 1000 units, 2.5-5 ms of CPU
more per launch. So the files live in ONE mount namespace of the daemon's own, the holder: its
root is a small tmpfs (pivoted onto, the host's tree detached: it pins no host filesystem),
propagation private, nothing else in it. The holder itself is kept by one bind mount of its
nsfs file at `<state_dir>/userns/mnt` (`HOLDER`): the host table grows by one mount, however
many units. The kernel never copies a mount namespace's nsfs mount into a new namespace
(copy_tree skips them), so no launcher or sandbox even sees that one. A range's file is
`/<base>-<size>` in the holder.

Why this design, and not the fork server keeping the fds in memory and passing each to its
launcher: fds die with the fork server and would need a hop back for every first launch, and
5000 units already spend most of the container's fd limit. A mount survives the daemon and
costs no fd.

Who does what:
  - the daemon opens the holder once (`Holder.open`, at its start, daemon.py): it makes it if there
    is none, else enters it, in a forked child (setns to a mount namespace needs a caller that
    shares its fs with no thread; the daemon has its writer threads), and keeps an fd of its
    root directory. Through that fd it lists the held files and drops one by unlinking it: the
    kernel detaches whatever is mounted on a file unlinked from another mount namespace (since
    Linux 3.18). No setns on the daemon's loop, no fork per drop.
  - the daemon hands that root fd to its fork server (`Holder.shared`, at the server's start),
    whose launchers inherit it: a launcher opens its range's file relative to it (openat; the
    walk crosses the holder's mounts though the launcher is not in it) and closes it before
    PID 1's fork. No setns per launch: entering the holder and coming back was ~0.27 ms of
    CPU on every launch's path. Only the first launch of a range (nothing found) enters the
    holder, once: it makes the namespace in its own mount namespace (the maker needs /proc),
    clones its nsfs file into a detached mount (open_tree) and attaches that in the holder
    (move_mount attaches only in the caller's own mount namespace). That is
    `Syscalls.hold_userns` (linux/syscalls.py): the launcher imports nothing more for it.
    Without the fd (a launcher forked by the daemon itself, or a holder remade since the fd
    was opened: the nsfs inode at HOLDER differs), the launcher enters the holder to look.

Why that is as safe as a namespace per launch: a user namespace holds no process, mount or
file of its own; what a sandbox leaves behind dies with its PID, mount and network namespaces.
The held one only keeps the maps (the unit's range, never another unit's), and a user
namespace nobody holds cannot be entered: the holder's file is in a root-only directory, and
nothing of the holder is in any sandbox's mount namespace. A file is dropped when its range is
given back or given to another unit (engine/idranges.py), so no two units ever join the same
one. A running sandbox keeps its namespace alive without the file.

Across a daemon restart the holder and its files survive (they are mounts, not fds): the next
daemon enters the same holder and keeps the files of the ranges it still owns (same range,
same maps), dropping the others; a daemon that stops its units drops every file and the holder
(`Holder.destroy`): nothing is left. Files an older daemon bind-mounted straight into the
host's table (`<state_dir>/userns/<base>-<size>`) are dropped at start (`drop_legacy`): their
ranges' next launches make them again in the holder.
"""

from __future__ import annotations

import contextlib
import os

from supervisor.linux import heldns
from supervisor.linux.syscalls import (
    CLONE_NEWNS,
    CLONE_NEWUSER,
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_REC,
    REAL,
    USERNS_HOLDER,
    HolderRoot,
    Syscalls,
    namespace_child,
    open_held_ns,
)

HOLDER = USERNS_HOLDER  # in the held directory: the holder namespace's nsfs file, bind-mounted
_HOLDER_TMPFS = "mode=0700,size=16k"  # empty files only: their inodes, no data


def path_for(directory: str, base: int, size: int) -> str:
    """The range's name for the launcher (LaunchRequest.userns_file): its file is the base name,
    in the holder kept at `directory`/HOLDER."""
    return os.path.join(directory, f"{base}-{size}")


def holder_path(directory: str) -> str:
    return os.path.join(directory, HOLDER)


def range_of(name: str) -> tuple[int, int] | None:
    """(base, size) of a file `path_for` named; None for any other name."""
    base, sep, size = name.partition("-")
    if not (sep and base.isdigit() and size.isdigit()):
        return None
    return int(base), int(size)


# -- the daemon's side --------------------------------------------------------------------


class Holder:
    """The daemon's handle on the holder: an fd of its root directory (module docstring)."""

    def __init__(self, directory: str, root: int, held: tuple[int, int] = (0, 0)) -> None:
        self.directory, self.root = directory, root
        # The holder's nsfs file's (st_dev, st_ino) when `root` was opened: the launchers check
        # that the holder kept at the path is still this one (HolderRoot.serves).
        self.dev, self.ino = held

    def shared(self) -> HolderRoot:
        """`root` for the fork server's launchers (Syscalls.hold_userns): they open their
        range's file through it instead of entering the holder."""
        return HolderRoot(self.root, self.dev, self.ino)

    @classmethod
    def open(cls, directory: str, sys_: Syscalls = REAL) -> Holder:
        """The holder kept at `directory`/HOLDER, made if there is none. OSError if it can be
        neither found nor made (the launchers then make a namespace per launch)."""
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = holder_path(directory)
        held = open_held_ns(path, CLONE_NEWNS)
        try:
            root = _root_of(sys_, held, path)
        finally:
            if held is not None:
                os.close(held)
        try:
            st = os.stat(path)  # the holder just entered or made
        except OSError:
            os.close(root)
            raise
        return cls(directory, root, (st.st_dev, st.st_ino))

    def names(self) -> list[str]:
        """The files in the holder, sorted: one per held range."""
        return sorted(os.listdir(self.root))

    def stamp(self) -> tuple[int, int, int] | None:
        """The holder directory's (mtime, ctime, size): a file made or removed in it moves them,
        so a caller that listed it can tell it need not list it again (None: cannot tell)."""
        try:
            st = os.fstat(self.root)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ctime_ns, st.st_size

    def open_ns(self, name: str) -> int | None:
        """An fd of the user namespace held at `name`, or None."""
        return open_held_ns(name, CLONE_NEWUSER, dir_fd=self.root)

    def drop(self, name: str) -> bool:
        """Remove `name`, which detaches the namespace mounted on it (the kernel frees it with
        its last user); True if a namespace was held there."""
        fd = self.open_ns(name)
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.root)
        return fd is not None

    def destroy(self, sys_: Syscalls = REAL) -> None:
        """Drop every file and the holder itself (the daemon exits, its sandboxes stopped)."""
        for name in self.names():
            self.drop(name)
        heldns.drop(holder_path(self.directory), CLONE_NEWNS, sys_)
        self.close()

    def close(self) -> None:
        if self.root >= 0:
            os.close(self.root)
            self.root = -1


def _root_of(sys_: Syscalls, held: int | None, path: str) -> int:
    """An fd of the holder's root directory: a forked child enters the holder held at `path`
    (`held`, an fd of it) or, with None, makes a new one, which is then held at `path`."""

    def enter() -> None:
        if held is None:
            _make_holder(sys_, os.path.dirname(path))
        else:
            sys_.setns(held, CLONE_NEWNS)

    with namespace_child(enter, f"{path}: cannot make or enter the holder") as pid:
        if held is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a plain file left by a reboot or a daemon killed mid-way
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            try:
                # The host's namespace is older than the holder: the kernel allows this bind
                # (an nsfs file of a mount namespace only ever goes into an older one).
                sys_.mount(f"/proc/{pid}/ns/mnt", path, None, MS_BIND, None)
            except OSError:
                os.unlink(path)
                raise
        return os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _make_holder(sys_: Syscalls, scratch: str) -> None:
    """In the forked child: a new mount namespace whose only mount is a small tmpfs root."""
    sys_.unshare(CLONE_NEWNS)
    sys_.mount(None, "/", None, MS_REC | MS_PRIVATE, None)  # nothing goes back to the host
    sys_.mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, _HOLDER_TMPFS)
    sys_.chdir(scratch)
    sys_.pivot_root(".", ".")  # the old root is stacked under the new one: detach it
    sys_.umount2(".", MNT_DETACH)
    sys_.chdir("/")


def drop_legacy(directory: str, sys_: Syscalls = REAL) -> list[str]:
    """Drop the files an older daemon bind-mounted into the host's table, one per range; the
    names dropped."""
    return [
        name
        for name in heldns.listed(directory)
        if range_of(name) is not None
        and heldns.drop(os.path.join(directory, name), CLONE_NEWUSER, sys_)
    ]


def drop_all(directory: str, sys_: Syscalls = REAL) -> None:
    """Drop every namespace held at `directory`, the holder with them, and an older daemon's
    files (nothing runs in them any more, or their sandboxes keep them alive themselves)."""
    drop_legacy(directory, sys_)
    if is_holder(directory):
        Holder.open(directory, sys_).destroy(sys_)


def is_holder(directory: str) -> bool:
    """Whether a holder is kept at `directory`/HOLDER."""
    return heldns.is_held(holder_path(directory), CLONE_NEWNS)


def is_held(path: str) -> bool:
    """Whether a user namespace is bind-mounted at `path` (an older daemon's host file)."""
    return heldns.is_held(path, CLONE_NEWUSER)
