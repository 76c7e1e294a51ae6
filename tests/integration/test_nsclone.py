"""A user namespace made without a fork (linux/nsclone.py, `make_userns`): its maps are the
ones asked for, the child that made it is reaped (no process left), and while its zombie
stands an unprivileged host user can neither write its maps nor enter it."""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

from supervisor.linux import nsclone
from supervisor.linux.syscalls import CLONE_NEWUSER, REAL
from tests.support import kit
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root]

NOBODY = 65534
_libc = ctypes.CDLL(None, use_errno=True)


def _in_child(body: str, arg: int, as_nobody: bool = False) -> str:
    """Run `body` (a small function's name below) in a forked child; what it wrote back."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reports through the pipe
        out = b"?"
        try:
            os.close(r)
            if as_nobody:
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
            out = CHILD_BODIES[body](arg).encode()
        except OSError as err:
            out = f"errno {err.errno}".encode()
        finally:
            os.write(w, out)
            os._exit(0)
    os.close(w)
    try:
        return os.read(r, 4096).decode()
    finally:
        os.close(r)
        os.waitpid(pid, 0)


def _maps_inside(fd: int) -> str:
    if _libc.setns(fd, CLONE_NEWUSER) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    with open("/proc/self/uid_map") as uid, open("/proc/self/gid_map") as gid:
        return f"{' '.join(uid.read().split())} | {' '.join(gid.read().split())}"


def _write_map(pid: int) -> str:
    fd = os.open(f"/proc/{pid}/uid_map", os.O_WRONLY)
    try:
        os.write(fd, f"0 {os.getuid()} 1\n".encode())
    finally:
        os.close(fd)
    return "written"


def _enter(pid: int) -> str:
    fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY)
    try:
        return _maps_inside(fd)
    finally:
        os.close(fd)


CHILD_BODIES = {"maps": _maps_inside, "write": _write_map, "enter": _enter}


def test_a_user_namespace_is_made_with_its_maps_and_leaves_no_process() -> None:
    # Other tests of this process may have left zombies of their own: only ours count.
    before = set(kit.zombies_of(os.getpid()))
    fd = REAL.make_userns("0 3000000 65536\n")
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") != os.readlink("/proc/self/ns/user")
        assert _in_child("maps", fd) == "0 3000000 65536 | 0 3000000 65536"
    finally:
        os.close(fd)
    # The cloned child was reaped: no zombie is left behind by it.
    assert set(kit.zombies_of(os.getpid())) - before == set()


def test_an_unprivileged_user_can_neither_map_nor_enter_the_namespace_of_the_zombie() -> None:
    before = set(kit.zombies_of(os.getpid()))
    pid = nsclone.exited_child(CLONE_NEWUSER)
    try:
        assert set(kit.zombies_of(os.getpid())) - before == {pid}
        # Before its maps are written: a host user who could write them would map itself (or
        # root) into a namespace a launcher is about to give a sandbox.
        refused = {f"errno {errno.EPERM}", f"errno {errno.EACCES}"}
        assert _in_child("write", pid, as_nobody=True) in refused
        assert _in_child("enter", pid, as_nobody=True) in refused
        assert _in_child("enter", pid) == " | "  # root reaches it: no maps written yet
    finally:
        os.waitpid(pid, 0)
