"""Which names of one directory may have changed since we last asked: an inotify(7) watch.

The unit loader asks this so that a reload of 5000 unchanged unit files need not lstat each
one (issue 23: 5000 lstat were ~18 ms of a 118 ms reload). A name is reported when anything
was done through the directory's entry (created, deleted, renamed in or out, written, its
attributes changed) or to the file itself (`follow`: a watch on its inode, so a write through
another hard link to it is reported too, which a directory watch alone does not see).

`changes()` answers None, "anything may have changed: look at everything", when events were
lost (IN_Q_OVERFLOW), when the directory's own watch is gone (the directory was removed or
moved), and when the path now names another directory (a symlink or a mount swapped in). What
inotify never reports, and so neither does this: a write through a shared writable mapping
(mmap), and a mount over a single file; the daemon's start (a full scan) sees those.

Reading never blocks (IN_NONBLOCK): the events wait in the kernel's queue until asked for, so
the daemon's loop does not watch the fd at all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct

from supervisor.linux import inotify
from supervisor.linux.inotify import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_DONT_FOLLOW,
    IN_IGNORED,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    IN_UNMOUNT,
)

_CONTENT = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE
_DIR_MASK = (
    _CONTENT | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
)
_DIR_GONE = IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT
_NAME_GONE = IN_MOVED_FROM | IN_DELETE
_FILE_MASK = _CONTENT | IN_DONT_FOLLOW
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name
_READ_SIZE = 1 << 16


class DirectoryWatch:
    """An inotify watch on `path` and on the files `follow`ed in it. `broken` once the
    directory's own watch is gone: make a new one."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.broken = False
        self._fd = inotify.init()
        try:
            mask = _DIR_MASK | IN_ONLYDIR | IN_DONT_FOLLOW
            self._dir = inotify.add_watch(self._fd, path, mask)
            # Taken after the watch is set: a swap after this is seen by `changes`.
            self._identity = _identity(path)
        except OSError:
            os.close(self._fd)
            raise
        self._names: dict[int, set[str]] = {}  # a followed file's watch -> its names here
        self._wd_of: dict[str, int] = {}
        self._lost = False  # events were lost since the last `changes`
        self._full = False  # a watch was refused for want of room since the last `changes`

    def follow(self, name: str) -> bool:
        """Watch the file `name` itself; call it before reading the file, so that a change
        after the read is reported. False: the kernel refused (a watch limit, the name gone):
        `name` is then never to be taken as unchanged until it is followed again."""
        if self._full:
            self._unfollow(name)
            return False
        try:
            wd = inotify.add_watch(self._fd, os.path.join(self.path, name), _FILE_MASK)
        except OSError as exc:
            # ENOSPC: the user's watches are all taken (fs.inotify.max_user_watches); not
            # asked again until the next `changes`, so a load of 5000 files past the limit
            # costs one refused call, not 5000, on top of the stat each file then needs.
            self._full = exc.errno == errno.ENOSPC
            self._unfollow(name)
            return False
        if self._wd_of.get(name) != wd:  # the same file again keeps its watch as it is
            self._unfollow(name)
            self._wd_of[name] = wd
            self._names.setdefault(wd, set()).add(name)
        return True

    def changes(self) -> set[str] | None:
        """The names that may have changed since the last call (None: anything may have; see
        the module doc)."""
        changed: set[str] = set()
        lost, self._lost, self._full = self._lost, False, False
        while not self.broken:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                lost = True
                break
            lost |= self._parse(data, changed)
        if not self.broken:
            try:
                self.broken = _identity(self.path) != self._identity
            except OSError:
                self.broken = True
        return None if lost or self.broken else changed

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.broken = True

    def _parse(self, data: bytes, changed: set[str]) -> bool:
        """Add the names `data`'s events are about to `changed`; True if events were lost."""
        lost = False
        offset = 0
        while offset < len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            start = offset + _EVENT.size
            raw = data[start : start + length].split(b"\0", 1)[0]
            offset = start + length
            if mask & IN_Q_OVERFLOW:
                lost = True
            elif wd == self._dir:
                if mask & _DIR_GONE:
                    self.broken = True
                elif raw:
                    name = os.fsdecode(raw)
                    changed.add(name)
                    if mask & _NAME_GONE:
                        self._unfollow(name)
            else:
                names = self._names.get(wd, ())
                changed.update(names)
                if mask & IN_IGNORED:  # the file's inode is gone (or was unwatched)
                    for name in self._names.pop(wd, set()):
                        self._wd_of.pop(name, None)
        return lost

    def _unfollow(self, name: str) -> None:
        """`name` no longer names the file its watch is on: drop the watch once no other name
        here does (a renamed-away file would otherwise stay watched)."""
        wd = self._wd_of.pop(name, None)
        if wd is None:
            return
        names = self._names.get(wd)
        if names is None:
            return
        names.discard(name)
        if not names:
            del self._names[wd]
            # ENOENT/EINVAL: its inode already went (its IN_IGNORED is queued).
            with contextlib.suppress(OSError):
                inotify.rm_watch(self._fd, wd)


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino
