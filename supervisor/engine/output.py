"""Service stdout/stderr: a pipe per run, drained by the daemon into `<log_dir>/<unit>.log`.

The service gets the pipe's write end as fds 1 and 2. The daemon watches the other end with
`loop.add_reader` and moves what arrives into the log file with splice(2) (RotatingLog.take),
rotating by size (`log_max_size`, keeping `log_keep` old files as `<unit>.log.1` ... `.N`).

A daemon restart must not break the service's output: if the last read end closed, the next
write would raise SIGPIPE/EPIPE in the service. So the sandbox's PID 1 inherits a duplicate of
the read end too (it never reads it), and the pipe always has a reader. While no daemon runs,
writes fill the pipe buffer (raised to 1 MiB) and then block, losing nothing; the next daemon
reopens the read end through /proc/<pid1>/fd/<n> and drains it. The state file records <n> as
PID 1 knows it (the kept fd's number, never the daemon's own number for the pipe, which differs
after a re-adoption) and the pipe's inode: the recorded fd is checked against that inode, and
if it is not that pipe (closed, or the number reused by the service), PID 1's other fds are
searched for it. Opening any of them read-only gives a read end, even the service's stdout: a
pipe's /proc link opens the pipe itself, with the access mode asked for. Cost: one extra fd in
PID 1, and a service that closes every inherited fd at start-up gives up the protection while
no daemon runs (it still works while one does, and the next daemon finds the pipe through
PID 1's stdout if it is still there). Alternatives considered: a per-unit log-keeper process
(one more process per unit to supervise) and systemd's fd store (FDSTORE=1, only under systemd).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from pathlib import Path

import structlog

from supervisor.linux import pipes, safefs
from supervisor.logtail import rotated_path

log = structlog.get_logger("sandboxd.output")

PIPE_SIZE = 1 << 20
LOG_DIR_MODE = 0o750  # root and the configured group (daemondirs.py), which may read logs
LOG_FILE_MODE = 0o640
_READ_CHUNK = 1 << 16
_READS_PER_WAKEUP = 16  # bound one wakeup's work so a chatty unit cannot starve the loop


class RotatingLog:
    """A unit's log file, rotated by size. Opened lazily; closed between runs.

    `take` moves output from a pipe into the file with splice(2), inside the kernel: a byte is
    either still in the pipe or already in the file (page cache), never only in the daemon's
    memory, so a daemon killed at any instant loses nothing (the next one drains the rest of
    the pipe). splice(2) refuses a file opened with O_APPEND, so the file is opened without it
    and each take starts at the file's current end, which is what O_APPEND does for the only
    writer (and keeps a file truncated by hand from growing a hole). On a filesystem that
    cannot splice (EINVAL), bytes are copied through memory instead, with that window open.

    When the file cannot take bytes (a full disk, a quota, an I/O error), they are read from
    the pipe and dropped, so a service never blocks on a full pipe: one warning per episode,
    the count in `dropped`, and a marker line in the file once writing works again.

    The file is opened relative to its directory's fd (reached with no symlink in any
    component), with O_NOFOLLOW, and must be a regular file the daemon owns with no other hard
    link (linux/safefs.py); rotation renames within that directory fd. A planted
    `<unit>.log -> /etc/shadow` (or a hard link to it) is never written through: it is left
    alone and the output is dropped as above, the warning saying why, until someone removes
    it. Refusing beats unlinking it: the log directory is root's, so a link there was put by
    root (an operator moving a log to another disk) or is evidence of tampering; deleting
    either would be a surprise, and the warning names the file.
    """

    def __init__(self, path: Path, max_size: int | None, keep: int) -> None:
        self.path, self.max_size, self.keep = path, max_size, keep
        self.dropped = 0  # bytes of output dropped, over the daemon's life
        self._fd: int | None = None
        self._size = 0
        self._splice = True
        self._dropping: tuple[int, str] | None = None  # (bytes so far, why) while dropping

    def take(self, pipe_fd: int, limit: int = _READ_CHUNK) -> int:
        """Move up to `limit` bytes from `pipe_fd` into the log: the count moved (or dropped),
        0 at end of file. BlockingIOError when the pipe is empty."""
        try:
            fd = self._room_for_more()
            if self._dropping is not None:
                self._resume()
            count = limit if self.max_size is None else min(limit, self.max_size - self._size)
            moved = self._move(pipe_fd, fd, count)
        except BlockingIOError:
            raise
        except OSError as exc:  # the file's side: the pipe's side raises from the read below
            return self._drop(pipe_fd, limit, exc)
        self._size += moved
        return moved

    def write(self, data: bytes) -> None:
        """Append `data` (whole, into one file: rotated first if it would not fit)."""
        fd = self._open()
        if self.max_size is not None and self._size and self._size + len(data) > self.max_size:
            self.rotate()
            fd = self._open()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        self._size += len(data)

    def rotate(self) -> None:
        self.close()
        name = self.path.name
        with safefs.directory(self.path.parent) as dir_fd:
            # rename(2) moves a symlink itself, never what it points to.
            for n in range(self.keep - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(rotated_path(name, n), rotated_path(name, n + 1),
                              src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # fmt: skip
            with contextlib.suppress(FileNotFoundError):
                os.rename(name, rotated_path(name, 1), src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        if self._fd is None:
            # Without O_APPEND: splice(2) refuses such files (see the class docstring).
            with safefs.directory(self.path.parent, mkdir_mode=LOG_DIR_MODE) as dir_fd:
                self._fd = safefs.open_owned(dir_fd, self.path.name, os.O_WRONLY | os.O_CREAT,
                                             LOG_FILE_MODE)  # fmt: skip
        # Always at the end, as O_APPEND would be (see the class docstring).
        self._size = os.lseek(self._fd, 0, os.SEEK_END)
        return self._fd

    def _room_for_more(self) -> int:
        fd = self._open()
        if self.max_size is not None and self._size >= self.max_size:
            self.rotate()
            fd = self._open()
        return fd

    def _move(self, pipe_fd: int, fd: int, count: int) -> int:
        if self._splice:
            try:
                return os.splice(pipe_fd, fd, count, flags=os.SPLICE_F_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._splice = False
                log.info("unit.output_copied", unit=self.path.stem, file=str(self.path),
                         detail="the log's filesystem cannot splice: output is copied through "
                         "memory, and a daemon killed mid-copy may lose that copy")  # fmt: skip
        data = os.read(pipe_fd, count)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        return len(data)

    def _drop(self, pipe_fd: int, limit: int, exc: OSError) -> int:
        data = os.read(pipe_fd, limit)  # BlockingIOError if empty, as in take
        self.dropped += len(data)
        if self._dropping is None:
            self._dropping = (0, exc.strerror or str(exc))
            log.warning("unit.output_dropping", unit=self.path.stem, file=str(self.path),
                        error=self._dropping[1],
                        detail="the log file takes no more output: it is dropped (and counted) "
                        "until it does again, so the service never blocks")  # fmt: skip
        self._dropping = (self._dropping[0] + len(data), self._dropping[1])
        return len(data)

    def _resume(self) -> None:
        """Say in the file what was dropped; raises OSError (still dropping) if it cannot."""
        assert self._dropping is not None
        count, why = self._dropping
        self.write(f"[sandboxd: {count} bytes of output dropped: {why}]\n".encode())
        self._dropping = None
        log.info("unit.output_resumed", unit=self.path.stem, dropped_bytes=count, error=why)


class Capture:
    """One run's output pipe: the daemon's read end, drained into a RotatingLog.

    `kept_fd` is the number under which the sandbox's PID 1 holds the pipe (what the state
    file records for the next daemon); `read_fd` is the daemon's own fd for it."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, read_fd: int, sink: RotatingLog, kept_fd: int
    ) -> None:
        self._loop, self.read_fd, self._sink, self.kept_fd = loop, read_fd, sink, kept_fd
        self.inode = os.fstat(read_fd).st_ino
        os.set_blocking(read_fd, False)
        self._reading = True
        loop.add_reader(read_fd, self._drain)

    @classmethod
    def new(cls, loop: asyncio.AbstractEventLoop, sink: RotatingLog) -> tuple[Capture, int]:
        """A fresh pipe: (capture, write end for the service). Both ends are close-on-exec;
        the launcher dups the write end onto 1 and 2 and passes `read_fd` down explicitly,
        under the same number (so `kept_fd` is `read_fd` here, and only here)."""
        read_fd, write_fd = pipes.new_pipe(PIPE_SIZE)
        return cls(loop, read_fd, sink, read_fd), write_fd

    @classmethod
    def reopen(
        cls, loop: asyncio.AbstractEventLoop, sink: RotatingLog, pid: int, fd: int, inode: int
    ) -> Capture | None:
        """Reattach to the pipe `inode` that PID 1 `pid` holds as `fd` or, failing that (see
        `pipes.check_fd`), as any other fd; None if it holds it nowhere."""
        held = pipes.open_held_pipe(pid, fd, inode)
        return None if held is None else cls(loop, held[0], sink, held[1])

    def _drain(self) -> bool:
        """Move what the pipe holds into the log (bounded); True if there may be more."""
        for _ in range(_READS_PER_WAKEUP):
            try:
                moved = self._sink.take(self.read_fd)
            except BlockingIOError:
                return False
            if not moved:  # every writer is gone; PID 1's read end keeps the pipe itself alive
                self._stop_reading()
                return False
        return True

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.read_fd)
            self._reading = False

    def close(self, drain: bool = True) -> None:
        """Stop reading (after taking what is buffered, if `drain`) and close the read end."""
        if self.read_fd < 0:
            return
        while drain and self._reading and self._drain():
            pass
        self._stop_reading()
        os.close(self.read_fd)
        self.read_fd = -1
        self._sink.close()
