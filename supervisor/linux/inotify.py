"""inotify(7), which Python 3.11 has no binding for: the calls and the event bits, declared
once. Users: linux/dirwatch.py (a unit directory's changed names) and cgroups/oom.py (a v2
cgroup's memory.events)."""

from __future__ import annotations

import ctypes
import os

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


def _oserror(path: str | None = None) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err), path)


def init() -> int:
    """A non-blocking, close-on-exec inotify instance: its events wait in the kernel's queue
    until read, and a read with none queued raises BlockingIOError instead of waiting."""
    fd = int(_libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    if fd < 0:
        raise _oserror()
    return fd


def add_watch(fd: int, path: str, mask: int) -> int:
    """The watch descriptor of the inode at `path` (one per inode: the same again for a second
    call on it, the new `mask` replacing the old)."""
    wd = int(_libc.inotify_add_watch(fd, os.fsencode(path), mask))
    if wd < 0:
        raise _oserror(path)
    return wd


def rm_watch(fd: int, wd: int) -> None:
    if int(_libc.inotify_rm_watch(fd, wd)) < 0:
        raise _oserror()
