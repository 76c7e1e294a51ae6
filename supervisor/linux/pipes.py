"""Pipes a service writes its output into, and finding them again in another process's fds.

A re-adopting daemon has no fd of the output pipe of a service it did not start: it finds the
pipe among PID 1's fds (/proc/<pid>/fd/<n>, whose link reads `pipe:[<inode>]`, proc(5)) and
opens it there; opening a pipe's /proc link opens the pipe itself, with the access mode asked
for, so read-only gives a read end even through the service's stdout.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass

_F_SETPIPE_SZ = 1031  # <linux/fcntl.h>: F_LINUX_SPECIFIC_BASE + 7
_F_GETPIPE_SZ = 1032
_SPLICE_F_NONBLOCK = 2  # <fcntl.h>
_libc = ctypes.CDLL(None, use_errno=True)
_libc.tee.restype = ctypes.c_ssize_t
_libc.tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]


def new_pipe(size: int | None = None) -> tuple[int, int]:
    """A close-on-exec pipe (read end, write end), with a `size`-byte buffer (`grow`) or the
    kernel's default 64 KiB."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    if size is not None:
        grow(write_fd, size)
    return read_fd, write_fd


def grow(fd: int, size: int) -> None:
    """Give pipe `fd` (either end) a `size`-byte buffer if the host allows it
    (/proc/sys/fs/pipe-max-size); else it keeps the one it has. The kernel allocates the
    buffer's slot array at once (40 bytes a page: 10 KiB, four pages, for 1 MiB; 640 bytes for
    the default 64 KiB) and the pages themselves only as bytes arrive."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)


def size(fd: int) -> int:
    """Pipe `fd`'s buffer size in bytes (F_GETPIPE_SZ)."""
    return fcntl.fcntl(fd, _F_GETPIPE_SZ)


@contextlib.contextmanager
def staging_pipe() -> Iterator[tuple[int, int]]:
    """An empty non-blocking pipe to stage bytes in (tee, then read) for the block: what a
    `take` uses when its caller (the log writer thread keeps one) gives none."""
    spare = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        yield spare
    finally:
        os.close(spare[0])
        os.close(spare[1])


def tee(src: int, dst: int, count: int) -> int:
    """Copy up to `count` bytes from pipe `src` into pipe `dst` without consuming them (tee(2),
    which Python's os lacks): the bytes stay in `src` until read. 0 when `src` is empty and has
    no writer left; BlockingIOError when it is empty and a writer may still write."""
    moved = _libc.tee(src, dst, count, _SPLICE_F_NONBLOCK)
    if moved < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))  # EAGAIN comes out as BlockingIOError
    return int(moved)


def discard(fd: int, count: int) -> None:
    """Read and forget exactly `count` bytes the caller knows are in pipe `fd`."""
    while count > 0:
        count -= len(os.read(fd, min(count, 1 << 16))) or count


class OutputPipe:
    """A service's output pipe as the writer thread and the loop share it.

    The writer copies bytes out with tee(2), which leaves them in the pipe, and consumes them
    only once they are in the file. While a write stalls, the loop may read (and drop) from the
    same pipe so that the service does not block; it then reads the teed bytes first, and
    `_teed` says how many of them it took, so that the writer consumes only the rest. The lock
    is held only around non-blocking pipe calls, never across a file write."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()
        self._teed = 0

    def tee(self, dst: int, count: int) -> int:
        with self._lock:
            self._teed = tee(self.fd, dst, count)
            return self._teed

    def consume(self) -> None:
        """Take out what the last `tee` copied (less what `drop` already read)."""
        with self._lock:
            discard(self.fd, self._teed)
            self._teed = 0

    def drop(self, limit: int) -> tuple[int, int]:
        """Read up to `limit` bytes and forget them: (bytes read, of which not already copied
        by a `tee`). (0, 0) at end of file; BlockingIOError when empty."""
        with self._lock:
            got = len(os.read(self.fd, limit))
            skipped = min(self._teed, got)
            self._teed -= skipped
            return got, got - skipped


@dataclass(frozen=True)
class FdProblem:
    """Why PID 1's fd `fd` is not the recorded pipe: `reason` is missing (no such fd),
    not-a-pipe, other-pipe or unreadable; `found` is what the fd is instead, or the error."""

    fd: int
    reason: str
    found: str | None = None


def check_fd(pid: int, fd: int, inode: int) -> FdProblem | None:
    """None if process `pid` holds the pipe `inode` as `fd`, else what is wrong with it."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except FileNotFoundError:
        return FdProblem(fd, "missing")
    except OSError as exc:
        return FdProblem(fd, "unreadable", exc.strerror)
    if target == _pipe_name(inode):
        return None
    return FdProblem(fd, "other-pipe" if target.startswith("pipe:") else "not-a-pipe", target)


def find_pipe(pid: int, inode: int) -> int | None:
    """An fd of process `pid` that is the pipe `inode` (kept fds before stdio), or None."""
    try:
        fds = sorted((int(n) for n in os.listdir(f"/proc/{pid}/fd")), key=lambda n: (n < 3, n))
    except OSError:
        return None
    for fd in fds:
        if check_fd(pid, fd, inode) is None:
            return fd
    return None


def open_held_pipe(pid: int, fd: int, inode: int) -> tuple[int, int] | None:
    """A non-blocking read end of the pipe `inode` that process `pid` holds as `fd` or, failing
    that (see `check_fd`), as any other fd: (our fd, its fd number there); None if it holds
    it nowhere."""
    found = fd if check_fd(pid, fd, inode) is None else find_pipe(pid, inode)
    if found is None:
        return None
    try:
        read_fd = os.open(f"/proc/{pid}/fd/{found}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    # Between the check and the open the fd may have been closed and its number reused.
    st = os.fstat(read_fd)
    if st.st_ino != inode or not stat.S_ISFIFO(st.st_mode):
        os.close(read_fd)
        return None
    return read_fd, found


def _pipe_name(inode: int) -> str:
    return f"pipe:[{inode}]"  # what /proc/<pid>/fd/<n> reads for a pipe (proc(5))
