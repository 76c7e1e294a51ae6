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
import contextlib
import errno
import os
from collections.abc import AsyncGenerator, AsyncIterator
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


async def read_log(
    path: str,
    lines: int | None = None,
    follow: bool = False,
    poll: float = POLL_INTERVAL,
    owner: int | None = None,
) -> AsyncIterator[bytes]:
    """Yield the last `lines` lines of `path` and its rotated files (all they hold when None),
    oldest first, then new output if `follow`. `owner` is the uid the files must belong to:
    the daemon's (this process's by default; sandboxctl reading without a daemon names it)."""
    current, rotated = open_history(path, owner)
    history = [*reversed(rotated), *([current] if current is not None else [])]
    try:
        first, offset = (0, 0) if lines is None else tail_start(history, lines)
        for index in range(first, len(history)):
            history[index].seek(offset if index == first else 0)
        for f in history[first:-1]:
            while chunk := f.read(CHUNK):
                yield chunk
        # The newest file (the current one, unless it is still to be created) is followed.
        newest = history[-1] if history else None
        async with contextlib.aclosing(_follow(newest, path, follow, poll, owner)) as chunks:
            async for chunk in chunks:
                yield chunk
    finally:
        for f in history:
            f.close()


async def _follow(
    f: BinaryIO | None, path: str, follow: bool, poll: float, owner: int | None
) -> AsyncGenerator[bytes, None]:
    """The rest of `f` (the newest log file, or None if there was none yet), then, if `follow`,
    whatever comes next under `path` and in the files rotated after `f`."""
    try:
        while True:
            if f is not None:
                while chunk := f.read(CHUNK):
                    yield chunk
            if not follow:
                return
            if f is None or _rotated(f, path):
                current, rotated = open_history(path, owner)
                # What was written before the rename, then every file rotated since (more than
                # one if the log rotates faster than we poll), oldest first.
                chain = [f, *_newer_than(f, rotated)] if f is not None else []
                for g in chain:
                    while chunk := g.read(CHUNK):
                        yield chunk
                # Hold on to the newest file read until the path exists again.
                keep = current if current is not None else (chain[-1] if chain else None)
                for g in {*chain, *rotated} - {keep}:
                    g.close()
                if keep is not f:
                    f = keep
                    continue
            await asyncio.sleep(poll)
    finally:
        if f is not None:
            f.close()


def _newer_than(f: BinaryIO, rotated: list[BinaryIO]) -> list[BinaryIO]:
    """The rotated files (newest first) that came after `f`, oldest first; none if `f` is not
    among them (truncated in place, or already rotated away: nothing to tell them apart by)."""
    mine = os.fstat(f.fileno())
    for index, g in enumerate(rotated):
        st = os.fstat(g.fileno())
        if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
            return list(reversed(rotated[:index]))
    return []
