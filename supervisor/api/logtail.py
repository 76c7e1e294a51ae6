"""Read the tail of a service log and follow it across rotation, truncation and restarts.

The engine appends a service's output to `<log_dir>/<unit>.log` and rotates by renaming it and
opening a new file; a restarted service keeps appending to the same path. A follower therefore
holds the file it opened, drains it to the end whenever the path points somewhere else (rotated)
or the file shrank (truncated), then reopens the path from its start. Polling keeps this
independent of inotify limits and of the filesystem the log lives on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import BinaryIO

CHUNK = 64 * 1024
POLL_INTERVAL = 0.2


def tail_offset(f: BinaryIO, lines: int) -> int:
    """The offset where the last `lines` lines of `f` start (reads backwards in chunks)."""
    end = f.seek(0, os.SEEK_END)
    if lines <= 0:
        return end
    pos, found = end, 0
    # A final line without its newline still counts as a line.
    if end > 0:
        f.seek(end - 1)
        if f.read(1) == b"\n":
            found = -1
    while pos > 0:
        step = min(CHUNK, pos)
        pos -= step
        f.seek(pos)
        block = f.read(step)
        index = len(block)
        while True:
            index = block.rfind(b"\n", 0, index)
            if index < 0:
                break
            found += 1
            if found == lines:
                return pos + index + 1
    return 0


def _open(path: str) -> BinaryIO | None:
    try:
        return open(path, "rb")  # owned by read_log, closed in its finally
    except FileNotFoundError:
        return None


def _rotated(f: BinaryIO, path: str) -> bool:
    """True when `path` no longer names the open file, or the file was truncated under us."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return True
    mine = os.fstat(f.fileno())
    return (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev) or mine.st_size < f.tell()


async def read_log(
    path: str, lines: int | None = None, follow: bool = False, poll: float = POLL_INTERVAL
) -> AsyncIterator[bytes]:
    """Yield the last `lines` lines of `path` (all when None), then new output if `follow`."""
    f = _open(path)
    try:
        if f is not None:
            f.seek(0 if lines is None else tail_offset(f, lines))
        while True:
            if f is not None:
                while chunk := f.read(CHUNK):
                    yield chunk
            if not follow:
                return
            if f is None or _rotated(f, path):
                fresh = _open(path)
                if fresh is not None:
                    if f is not None:
                        while chunk := f.read(CHUNK):  # what was written before the rename
                            yield chunk
                        f.close()
                    f = fresh
                    continue
            await asyncio.sleep(poll)
    finally:
        if f is not None:
            f.close()
