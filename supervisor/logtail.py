"""Service log files: their names, and reading their tail across the rotated files, following
it across rotation, truncation and restarts.

A bottom module: the engine writes these files (engine/output.py, by the names declared here),
the API serves them (`GET /v1/units/{name}/logs`) and `sandboxctl logs` reads them itself
while the daemon is unreachable (cli/logfiles.py), all with this one reader.

The engine appends a service's output to `<log_dir>/<unit>.log` and rotates by renaming it to
`<unit>.log.1` (and `.1` to `.2`, ...) and opening a new file at the first write after that
(engine/output.py). A reader opens the whole history at once (open files do not move when
renamed), so the last N lines come from the rotated files too, newest last. They are found by
reading backwards from the end, chunk by chunk: the cost is the size of those N lines, never
the whole history. A follower holds the newest file it has read; when the path names another
file (rotated) or the file shrank (truncated), it drains its file, reads every file rotated
after it (several if the log rotates faster than it polls), then the new file from its start.
Polling keeps this independent of inotify limits and of the filesystem the log lives on.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator
from concurrent.futures import Executor, Future
from typing import BinaryIO

from supervisor.linux import safefs

CHUNK = 64 * 1024
POLL_INTERVAL = 0.2
# Rotation renames from the oldest down, so mid-rotation one number is briefly missing: only
# two missing numbers in a row end the history.
_GAP = 2


def rotated_path(path: str | os.PathLike[str], n: int) -> str:
    """The name of the `n`th newest rotated file of the log at `path` (1 is the newest)."""
    return f"{os.fspath(path)}.{n}"


# A file the daemon did not write (a planted symlink to /etc/shadow, a hard link, a FIFO) is
# as good as missing: the daemon reads as root for any member of the read group.
_NOT_OURS = {errno.ENOENT, errno.ELOOP, errno.EPERM, errno.EMLINK, errno.EINVAL, errno.ENXIO}


def _open(path: str, owner: int | None) -> BinaryIO | None:
    directory, name = os.path.split(path)
    try:
        with safefs.directory(directory) as dir_fd:
            fd = safefs.open_owned(dir_fd, name, os.O_RDONLY, owner=owner)
    except OSError as exc:
        if exc.errno in _NOT_OURS:
            return None
        raise
    return os.fdopen(fd, "rb")  # owned by the caller


def open_history(path: str, owner: int | None = None) -> tuple[BinaryIO | None, list[BinaryIO]]:
    """(the current file or None, the rotated files newest first), all open; only files owned
    by `owner` (default: this process's user) count.

    A rotation between two opens would show one file twice (under its old and its new name):
    only its first, newer, place counts, which keeps the order right."""
    current = _open(path, owner)
    seen = set()
    if current is not None:
        st = os.fstat(current.fileno())
        seen.add((st.st_dev, st.st_ino))
    rotated: list[BinaryIO] = []
    n = missing = 0
    while missing < _GAP:
        n += 1
        f = _open(rotated_path(path, n), owner)
        if f is None:
            missing += 1
            continue
        missing = 0
        st = os.fstat(f.fileno())
        if (st.st_dev, st.st_ino) in seen:
            f.close()
            continue
        seen.add((st.st_dev, st.st_ino))
        rotated.append(f)
    return current, rotated


def tail_start(files: list[BinaryIO], lines: int) -> tuple[int, int]:
    """(index, offset) in `files` (oldest first, read as one stream) where the last `lines`
    lines start; reads backwards in chunks from the end of the last file."""
    if lines <= 0 or not files:
        return max(0, len(files) - 1), files[-1].seek(0, os.SEEK_END) if files else 0
    found: int | None = None  # None until the stream's last byte is known
    for index in range(len(files) - 1, -1, -1):
        f = files[index]
        pos = f.seek(0, os.SEEK_END)
        while pos > 0:
            step = min(CHUNK, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            if found is None:
                # A final line without its newline still counts as a line.
                found = -1 if block.endswith(b"\n") else 0
            at = len(block)
            while (at := block.rfind(b"\n", 0, at)) >= 0:
                found += 1
                if found == lines:
                    return index, pos + at + 1
    return 0, 0


def _rotated(f: BinaryIO, path: str) -> bool:
    """True when `path` no longer names the open file, or the file was truncated under us."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return True
    mine = os.fstat(f.fileno())
    return (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev) or mine.st_size < f.tell()


class LogReader:
    """The blocking half of `read_log`: each `step()` does a bounded amount of I/O (an open
    of the history, or one read of at most CHUNK bytes), so a caller can run each step on a
    thread and keep its event loop free of a log disk that stalls (the daemon does)."""

    def __init__(self, path: str, lines: int | None, follow: bool, owner: int | None) -> None:
        self.path, self.lines, self.follow, self.owner = path, lines, follow, owner
        self._started = False
        self._older: list[BinaryIO] = []  # files to read to their end first, oldest first
        self._newest: BinaryIO | None = None  # the file followed (None: none written yet)

    def step(self) -> bytes | None:
        """The next chunk; b"" when there is nothing new yet (follow: ask again after a
        pause); None at the end (not following)."""
        if not self._started:
            self._started = True
            self._start()
        while True:
            while self._older:
                if chunk := self._older[0].read(CHUNK):
                    return chunk
                self._older.pop(0).close()
            f = self._newest
            if f is not None and (chunk := f.read(CHUNK)):
                return chunk
            if not self.follow:
                return None
            if not (f is None or _rotated(f, self.path)) or not self._reopen():
                return b""

    def _start(self) -> None:
        current, rotated = open_history(self.path, self.owner)
        history = [*reversed(rotated), *([current] if current is not None else [])]
        first, offset = (0, 0) if self.lines is None else tail_start(history, self.lines)
        for f in history[:first]:
            f.close()
        history = history[first:]
        for index, f in enumerate(history):
            f.seek(offset if index == 0 else 0)
        self._older, self._newest = history[:-1], (history[-1] if history else None)

    def _reopen(self) -> bool:
        """After a rotation or truncation: what was written to the followed file before it,
        then every file rotated since (more than one if the log rotates faster than we poll),
        oldest first, then the new file. False when there is nothing new to follow yet."""
        f = self._newest
        current, rotated = open_history(self.path, self.owner)
        chain = [f, *_newer_than(f, rotated)] if f is not None else []
        # Hold on to the newest file read until the path exists again.
        keep = current if current is not None else (chain[-1] if chain else None)
        for g in set(rotated) - {*chain, keep}:
            g.close()
        if keep is f:
            return False
        self._older = [g for g in chain if g is not keep]
        self._newest = keep
        return True

    def close(self) -> None:
        for f in {*self._older, self._newest} - {None}:
            assert f is not None
            f.close()
        self._older, self._newest = [], None


async def read_log(
    path: str,
    lines: int | None = None,
    follow: bool = False,
    *,
    poll: float = POLL_INTERVAL,
    owner: int | None = None,
    offload: Executor | None = None,
) -> AsyncIterator[bytes]:
    """Yield the last `lines` lines of `path` and its rotated files (all they hold when None),
    oldest first, then new output if `follow`. `owner` is the uid the files must belong to:
    the daemon's (this process's by default; sandboxctl reading without a daemon names it).
    With `offload`, every blocking step runs on that executor's threads, one at a time."""
    reader = LogReader(path, lines, follow, owner)
    running: Future[bytes | None] | None = None
    try:
        while True:
            if offload is None:
                chunk = reader.step()
            else:
                running = offload.submit(reader.step)
                chunk = await asyncio.wrap_future(running)
                running = None
            if chunk is None:
                return
            if chunk:
                yield chunk
            else:
                await asyncio.sleep(poll)
    finally:
        if offload is None:
            reader.close()
        elif running is not None:
            # Left mid-step (the client went away): close once that step is over, never
            # under its feet; on the executor too, as a close may wait on the disk as well.
            running.add_done_callback(lambda _: offload.submit(reader.close))
        else:
            offload.submit(reader.close)


def _newer_than(f: BinaryIO, rotated: list[BinaryIO]) -> list[BinaryIO]:
    """The rotated files (newest first) that came after `f`, oldest first; none if `f` is not
    among them (truncated in place, or already rotated away: nothing to tell them apart by)."""
    mine = os.fstat(f.fileno())
    for index, g in enumerate(rotated):
        st = os.fstat(g.fileno())
        if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
            return list(reversed(rotated[:index]))
    return []
