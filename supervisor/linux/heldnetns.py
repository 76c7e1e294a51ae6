"""Network namespaces the daemon holds for a unit across its runs, as `ip netns add` does:
a namespace kept alive by a bind mount of its nsfs file onto a file of the daemon's.

Why: a `[[listen]]` tcp/udp socket belongs to the network namespace it was created in, for
its whole life. A sandbox that got a fresh namespace at every start could never be handed a
socket that outlives the run; one that joins the same held namespace at every start can, and
its clients wait in the socket's backlog while the service restarts.

How, and why not a forked helper: setns(2) and unshare(2) move only the calling thread, so
the daemon's loop thread unshares a new network namespace, bind-mounts its own
/proc/thread-self/ns/net onto the file, brings `lo` up and binds the unit's sockets (`inside`),
and returns to its own namespace through the fd netns.py opened once, all synchronously:
nothing is awaited in between, so no other code of the loop ever runs there (the same rule as
netns.briefly_in). A helper process would cost a fork of the large daemon (or a round trip to
the fork server) for a few microseconds of syscalls, and the sockets would still have to be
passed back. If the way back fails the daemon exits at once (netns.py says why).

The file lives in the state dir (root-only): whoever can open it can enter the namespace.
A mount survives the daemon (not a reboot): the next daemon finds the file and opens it again
(`is_held`); `drop` unmounts and unlinks it, and the kernel frees the namespace with its last
user (no process in it, no socket of it left open, its veth pair then goes with it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from supervisor.linux import heldns, netns, procsys
from supervisor.linux.syscalls import CLONE_NEWNET, MS_BIND, REAL, Syscalls, open_held_ns

# Every group may open ICMP datagram sockets (ping without CAP_NET_RAW), as a per-run
# namespace allows through the launch plan (launch.net_sysctls); set here, from the daemon's
# user namespace, because a sandbox with its own user namespace cannot write the sysctls of a
# network namespace it does not own.
PING_GROUP_RANGE = b"0 2147483647"


class HeldNetnsError(OSError):
    """A held namespace could not be made (the message names the file)."""


def path_for(directory: str, unit: str) -> str:
    return os.path.join(directory, unit)


def is_held(path: str) -> bool:
    """Whether `path` is a file with a network namespace mounted on it."""
    return heldns.is_held(path, CLONE_NEWNET)


def open_held(path: str) -> int:
    """An fd of the namespace held at `path` (HeldNetnsError if none is)."""
    fd = open_held_ns(path, CLONE_NEWNET)
    if fd is None:
        raise HeldNetnsError(0, f"{path}: not a held network namespace")
    return fd


def create(path: str, sys_: Syscalls = REAL) -> None:
    """Make a new network namespace held at `path`, with `lo` up. Idempotent: a namespace
    already held there is kept. HeldNetnsError naming the file otherwise."""
    if is_held(path):
        return
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a plain file left by a daemon killed between touch and mount
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError as err:
        raise HeldNetnsError(err.errno, f"{path}: {err.strerror}") from None
    own = netns.own_fd("net")
    try:
        sys_.unshare(CLONE_NEWNET)
    except OSError as err:
        os.unlink(path)
        raise HeldNetnsError(err.errno, f"{path}: unshare(CLONE_NEWNET): {err.strerror}") from None
    failed: OSError | None = None
    try:
        sys_.mount("/proc/thread-self/ns/net", path, None, MS_BIND, None)
        sys_.link_up("lo")
        # Through a procfs instance of its own (procsys.py): a look-up under the host's
        # /proc/sys/net walks one cached dentry per namespace that ever made one there. An
        # old kernel without the sysctl: no ping.
        with contextlib.suppress(OSError), procsys.opened(sys_) as proc_sys:
            sys_.write_file("net/ipv4/ping_group_range", PING_GROUP_RANGE, False, proc_sys)
    except OSError as err:
        failed = err
    finally:
        netns.return_to_own(own, "net", sys_)
    if failed is not None:
        drop(path, sys_)
        raise HeldNetnsError(failed.errno, f"{path}: {failed.strerror}")


@contextlib.contextmanager
def inside(path: str, sys_: Syscalls = REAL) -> Iterator[None]:
    """Run the (synchronous, short) body in the namespace held at `path`: sockets created
    there belong to it. HeldNetnsError if none is held there."""
    fd = open_held(path)
    try:
        with netns.briefly_in(fd, "net", sys_):
            yield
    finally:
        os.close(fd)


def inode(path: str) -> int:
    """The held namespace's inode (the same as /proc/<pid>/ns/net of a process in it)."""
    return os.stat(path).st_ino


def drop(path: str, sys_: Syscalls = REAL) -> bool:
    """Unmount and remove `path` (heldns.drop); True if a namespace was held there."""
    return heldns.drop(path, CLONE_NEWNET, sys_)


listed = heldns.listed  # the names of the files in a directory: the units with a held namespace
