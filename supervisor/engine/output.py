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
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog

from supervisor.engine.logwriter import WRITER, LogWriter
from supervisor.linux import pipes, safefs
from supervisor.linux.pipes import OutputPipe
from supervisor.logtail import rotated_path

log = structlog.get_logger("sandboxd.output")

# A service's output pipe starts at the kernel's 64 KiB and grows to PIPE_SIZE at its first
# output (Capture._ready): a sandbox that never writes (most idle ones) keeps the small slot
# array, 640 bytes, instead of 1 MiB's four pages, and one that writes gets the room to keep
# writing while a log write takes long (STALL_AFTER) or while no daemon reads.
PIPE_SIZE = 1 << 20
LOG_DIR_MODE = 0o750  # root and the configured group (daemondirs.py), which may read logs
LOG_FILE_MODE = 0o640
_READ_CHUNK = 1 << 16
_READS_PER_WAKEUP = 16  # bound one drain so a chatty unit cannot starve the other units
# A log write taking longer than this is stalled: the loop drops the unit's output meanwhile.
STALL_AFTER = 2.0
STALLED = "writes to the log file stalled"


class RotatingLog:
    """A unit's log file, rotated by size. Opened lazily; closed between runs.

    `take` moves output from a pipe into the file inside the kernel: tee(2) copies it into a
    staging pipe without consuming it, splice(2) moves the copy into the file, and only then is
    it consumed from the service's pipe. So a byte leaves the pipe only once it is in the file
    (page cache), and a daemon killed at any instant loses nothing: the next one drains the
    rest of the pipe (a kill between the write and the consume writes up to one chunk twice).
    splice(2) refuses a file opened with O_APPEND, so the file is opened without it and each
    take starts at the file's current end, which is what O_APPEND does for the only writer
    (and keeps a file truncated by hand from growing a hole). On a filesystem that cannot
    splice (EINVAL), the copy goes through memory, still consumed only once written.

    Every call that touches the file runs on the writer thread (logwriter.py), never on the
    loop: a stalled filesystem stalls that thread only.

    When the file cannot take bytes (a full disk, a quota, an I/O error), they are read from
    the pipe and dropped, so a service never blocks on a full pipe: one warning per episode,
    the count in `dropped`, and a marker line in the file once writing works again. A stalled
    write is an episode too (Capture drops from the loop and calls `note_dropped`).

    The file is opened relative to its directory's fd (reached with no symlink in any
    component), with O_NOFOLLOW, and must be a regular file the daemon owns with no other hard
    link (linux/safefs.py); rotation renames within that directory fd. A planted
    `<unit>.log -> /etc/shadow` (or a hard link to it) is never written through: it is left
    alone and the output is dropped as above, the warning saying why, until someone removes
    it. Refusing beats unlinking it: the log directory is root's, so a link there was put by
    root (an operator moving a log to another disk) or is evidence of tampering; deleting
    either would be a surprise, and the warning names the file.
    """

    # Slots: one per unit, for its life (issue 23, the daemon's heap per unit).
    __slots__ = (
        "_dropping",
        "_fd",
        "_size",
        "_splice",
        "dropped_by_writer",
        "dropped_journal",
        "dropped_stalled",
        "keep",
        "max_size",
        "path",
        "written",
    )

    def __init__(self, path: Path, max_size: int | None, keep: int) -> None:
        self.path, self.max_size, self.keep = path, max_size, keep
        self.dropped_by_writer = 0  # bytes the file could not take (the writer thread's count)
        self.dropped_stalled = 0  # bytes dropped by the loop while a write stalled (its count)
        self.dropped_journal = 0  # lines the journal did not take (journalout.py, writer thread)
        self._fd: int | None = None
        self._size = 0
        self.written = 0  # bytes written into the log files, over the daemon's life
        self._splice = True
        self._dropping: tuple[int, str] | None = None  # (bytes so far, why) while dropping

    @property
    def dropped(self) -> int:
        """Bytes of output dropped (from the file or the journal), over the daemon's life."""
        return self.dropped_by_writer + self.dropped_stalled + self.dropped_journal

    def take(
        self, pipe: OutputPipe | int, limit: int = _READ_CHUNK, spare: tuple[int, int] | None = None
    ) -> int:
        """Move up to `limit` bytes from `pipe` into the log: the count moved (or dropped),
        0 at end of file. BlockingIOError when the pipe is empty. `spare`: an empty pipe to
        stage the bytes in (the writer thread's), else one is made for this call."""
        if spare is None:
            with pipes.staging_pipe() as staging:
                return self.take(pipe, limit, staging)
        src = pipe if isinstance(pipe, OutputPipe) else OutputPipe(pipe)
        try:
            fd = self._room_for_more()
            if self._dropping is not None:
                self._resume()
        except OSError as exc:
            return self._drop(src, limit, exc)
        count = limit if self.max_size is None else min(limit, self.max_size - self._size)
        spare_read, spare_write = spare
        teed = src.tee(spare_write, count)  # the pipe's side raises from here
        written = 0
        try:
            while written < teed:
                written += self._move(spare_read, fd, teed - written)
        except OSError as exc:  # the file's side: what it did not take is dropped
            with contextlib.suppress(OSError):
                pipes.discard(spare_read, teed - written)
            self._size += written
            self.written += written
            src.consume()
            self._count_dropped(teed - written, exc.strerror or str(exc))
            return teed
        self._size += written
        self.written += written
        src.consume()
        return teed

    def note_dropped(self, count: int, why: str) -> None:
        """Record `count` bytes dropped elsewhere (a stalled write) and say so in the file now,
        not at the unit's next output (a quiet unit may have none for hours)."""
        so_far = 0 if self._dropping is None else self._dropping[0]
        self._dropping = (so_far + count, why)
        with contextlib.suppress(OSError):  # still failing: the next take says it
            self._room_for_more()
            self._resume()

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
        self.written += len(data)

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

    def _move(self, spare: int, fd: int, count: int) -> int:
        if self._splice:
            try:
                moved = os.splice(spare, fd, count)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._splice = False
                log.info("unit.output_copied", unit=self.path.stem, file=str(self.path),
                         detail="the log's filesystem cannot splice: output is copied through "
                         "memory (still consumed from the pipe only once written)")  # fmt: skip
            else:
                if not moved:  # never for a staging pipe holding `count` bytes; no endless loop
                    raise OSError(errno.EIO, "splice into the log moved nothing")
                return moved
        data = os.read(spare, count)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        return len(data)

    def _drop(self, src: OutputPipe, limit: int, exc: OSError) -> int:
        got, dropped = src.drop(limit)  # BlockingIOError if empty, as in take
        self._count_dropped(dropped, exc.strerror or str(exc))
        return got

    def _count_dropped(self, count: int, why: str) -> None:
        self.dropped_by_writer += count
        if self._dropping is None:
            self._dropping = (0, why)
            log.warning("unit.output_dropping", unit=self.path.stem, file=str(self.path),
                        error=why,
                        detail="the log file takes no more output: it is dropped (and counted) "
                        "until it does again, so the service never blocks")  # fmt: skip
        self._dropping = (self._dropping[0] + count, self._dropping[1])

    def _resume(self) -> None:
        """Say in the file what was dropped; raises OSError (still dropping) if it cannot."""
        assert self._dropping is not None
        count, why = self._dropping
        self.write(f"[sandboxd: {count} bytes of output dropped: {why}]\n".encode())
        self._dropping = None
        log.info("unit.output_resumed", unit=self.path.stem, dropped_bytes=count, error=why)


class Sink(Protocol):
    """Where a Capture moves a pipe's bytes: a RotatingLog, or a journalout.JournalStream."""

    @property
    def path(self) -> Path: ...
    @property
    def written(self) -> int: ...

    dropped_stalled: int

    def take(
        self, pipe: OutputPipe | int, limit: int = ..., spare: tuple[int, int] | None = None
    ) -> int: ...
    def note_dropped(self, count: int, why: str) -> None: ...
    def close(self) -> None: ...


class Capture:
    """One run's output pipe: the daemon's read end, drained into a RotatingLog.

    The loop watches the pipe; when it has output, the loop stops watching and hands one
    bounded drain to the writer thread (logwriter.py), and watches again when it is done. A
    drain still running after STALL_AFTER seconds means the log's filesystem is stalled: the
    loop then reads and drops what the service writes (counted, one `unit.output_dropping`
    warning, a marker line once the write returns), as for a full disk, so that neither the
    service nor the loop ever waits for that filesystem.

    `kept_fd` is the number under which the sandbox's PID 1 holds the pipe (what the state
    file records for the next daemon); `read_fd` is the daemon's own fd for it."""

    # Slots: one per unit's run, for the run's life (issue 23, the daemon's heap per unit).
    __slots__ = (
        "_busy",
        "_closing",
        "_grown",
        "_loop",
        "_pipe",
        "_reading",
        "_sink",
        "_stall_timer",
        "_stalled",
        "_writer",
        "inode",
        "kept_fd",
        "on_closed",
        "read_fd",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        read_fd: int,
        sink: Sink,
        kept_fd: int,
        writer: LogWriter = WRITER,
    ) -> None:
        self._loop, self.read_fd, self._sink, self.kept_fd = loop, read_fd, sink, kept_fd
        self._writer = writer
        self._pipe = OutputPipe(read_fd)
        self.inode = os.fstat(read_fd).st_ino
        os.set_blocking(read_fd, False)
        self._busy = False  # a drain is queued or running on the writer thread
        self._closing: bool | None = None  # once closed: whether to drain first
        self._stall_timer: asyncio.TimerHandle | None = None
        self._stalled: int | None = None  # bytes dropped in this stall episode, while stalled
        self._reading = False
        self._grown = False  # the pipe has PIPE_SIZE (from the first output on)
        # Told (on the loop) once the pipe is closed and its last bytes are in the log, with the
        # sink's `written`: a client following the log knows then it has seen everything.
        self.on_closed: Callable[[int], None] | None = None
        self._watch(self._ready)

    @classmethod
    def new(cls, loop: asyncio.AbstractEventLoop, sink: Sink) -> tuple[Capture, int]:
        """A fresh pipe: (capture, write end for the service). Both ends are close-on-exec;
        the launcher dups the write end onto 1 and 2 and passes `read_fd` down explicitly,
        under the same number (so `kept_fd` is `read_fd` here, and only here)."""
        read_fd, write_fd = pipes.new_pipe()  # PIPE_SIZE once it has output (_ready)
        return cls(loop, read_fd, sink, read_fd), write_fd

    @classmethod
    def reopen(
        cls, loop: asyncio.AbstractEventLoop, sink: Sink, pid: int, fd: int, inode: int
    ) -> Capture | None:
        """Reattach to the pipe `inode` that PID 1 `pid` holds as `fd` or, failing that (see
        `pipes.check_fd`), as any other fd; None if it holds it nowhere."""
        held = pipes.open_held_pipe(pid, fd, inode)
        return None if held is None else cls(loop, held[0], sink, held[1])

    def close(self, drain: bool = True) -> None:
        """Stop watching and close the read end, on the writer thread after the drain under
        way (and, if `drain`, after taking what is buffered): never waits for the file."""
        if self._closing is not None:
            return
        self._closing = drain
        self._unwatch()
        if not self._busy:
            self._writer.submit(self._finish)

    # The loop's side.

    def _watch(self, callback: Callable[[], None]) -> None:
        self._unwatch()
        self._loop.add_reader(self.read_fd, callback)
        self._reading = True

    def _unwatch(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.read_fd)
            self._reading = False

    def _ready(self) -> None:
        self._unwatch()
        if not self._grown:
            pipes.grow(self.read_fd, PIPE_SIZE)
            self._grown = True
        self._busy = True
        self._stall_timer = self._loop.call_later(STALL_AFTER, self._stall)
        self._writer.submit(self._drain_job)

    def _stall(self) -> None:
        self._stall_timer = None
        if self._busy and self._closing is None:
            self._stalled = 0
            log.warning("unit.output_dropping", unit=self._sink.path.stem,
                        file=str(self._sink.path), error=STALLED,
                        detail="writes to the log file stalled: the service's output is "
                        "dropped (and counted) until one returns, so the service and the "
                        "daemon never wait for that filesystem")  # fmt: skip
            self._watch(self._drop_stalled)

    def _drop_stalled(self) -> None:
        for _ in range(_READS_PER_WAKEUP):
            try:
                got, dropped = self._pipe.drop(_READ_CHUNK)
            except BlockingIOError:
                return
            self._sink.dropped_stalled += dropped
            assert self._stalled is not None
            self._stalled += dropped
            if not got:  # every writer is gone
                self._unwatch()
                return

    def _drained(self, open_: bool) -> None:
        self._busy = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._stalled is not None:
            self._unwatch()
            count, self._stalled = self._stalled, None
            if count:
                # The marker line is the sink's: written by the writer thread, before what
                # follows; it says `unit.output_resumed` too.
                self._writer.submit(lambda: self._sink.note_dropped(count, STALLED))
            else:  # the service wrote nothing meanwhile: no line in its log, the episode ends
                log.info("unit.output_resumed", unit=self._sink.path.stem, dropped_bytes=0,
                         error=STALLED)  # fmt: skip
        if self._closing is not None:
            self._writer.submit(self._finish)
        elif open_:
            self._watch(self._ready)

    def _post(self, callback: Callable[[bool], None], arg: bool) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the daemon is exiting
            self._loop.call_soon_threadsafe(callback, arg)

    # The writer thread's side.

    def _drain_job(self) -> None:
        open_ = True
        try:
            open_ = self._drain()
        finally:  # even after a bug, so that the loop does not wait for this capture forever
            self._post(self._drained, open_)

    def _drain(self, rounds: int = _READS_PER_WAKEUP) -> bool:
        """Move what the pipe holds into the log (bounded); False at end of file."""
        for _ in range(rounds):
            try:
                moved = self._sink.take(self._pipe, spare=self._writer.spare)
            except BlockingIOError:
                return True
            if not moved:  # every writer is gone; PID 1's read end keeps the pipe itself alive
                return False
        return True

    def _finish(self) -> None:
        if self._closing:
            # What the pipe held at close, at most (a service still writing never ends it).
            self._drain(PIPE_SIZE // _READ_CHUNK + 1)
        os.close(self.read_fd)
        self._sink.close()
        if self.on_closed is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the daemon is exiting
                self._loop.call_soon_threadsafe(self.on_closed, self._sink.written)
