"""The probe of host paths that change only through their directory or a mount, kept while
neither did (hostlayout.py asks it at every launch).

A launch's `HostLayout.probe()` looked at ~65 host paths (an lstat and a statvfs each): 1000
starts in a row were 65 000 lstat and 47 000 statvfs of the same /usr, /etc/passwd and /dev/null,
~0.45 ms of the daemon's CPU per start. What such a path is can only change through an entry of
its directory (created, removed, renamed, made a link, written, its attributes changed: all
reported by an inotify watch on the directory, and on the copied files themselves for a write
through another hard link) or through the mount table (a mount over it, a remount read-only:
reported by a poll of /proc/self/mountinfo). So the paths under the watched directories are
probed again only after one of those said something, and the launch still sees every change:
a path that vanished fails it with the same clear error, at the next launch after the change.

Paths anywhere else (/proc and /sys entries, which no inotify reports; a unit's bind sources)
are probed at every launch as before. Whenever a watch cannot be had (no inotify instance left,
a watched directory that is a symlink) nothing is kept: every launch probes, as it did.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from supervisor.linux.dirwatch import DirectoryWatch
from supervisor.linux.mountwatch import MountTableWatch

_T = TypeVar("_T")


class SettledProbe(Generic[_T]):
    """`entries()`: every `names` of each directory of `dirs` (directory -> names; those in
    `copied` are files whose content the probe reads), probed by `probe`, or the last answer
    while no watch reported a change since it was made."""

    def __init__(
        self,
        dirs: Mapping[str, tuple[str, ...]],
        copied: str,
        probe: Callable[[str, bool], _T | None],  # (path, copy) -> what it is, None: absent
    ) -> None:
        self._dirs = {d: frozenset(names) for d, names in dirs.items()}
        self._copied = copied
        self._probe = probe
        self._watches: dict[str, DirectoryWatch] = {}
        self._mounts: MountTableWatch | None = None
        self._kept: dict[str, _T | None] | None = None
        self.probes = 0  # how often the paths were looked at (for tests and the bench)

    def entries(self) -> dict[str, _T | None]:
        # Asked before the probe: a change made while it runs is reported by the next call.
        if self._unchanged() and self._kept is not None:
            return self._kept
        self.probes += 1
        found: dict[str, _T | None] = {}
        trusted = True
        for directory, names in self._dirs.items():
            watch = self._watches.get(directory)
            for name in sorted(names):
                path = os.path.join(directory, name)
                copy = directory == self._copied
                # Followed before it is read, so a write after the read is reported.
                followed = copy and watch is not None and watch.follow(name)
                entry = found[path] = self._probe(path, copy)
                if copy and entry is not None and not followed:
                    trusted = False  # a file whose writes no watch would report
        self._kept = found if trusted and len(self._watches) == len(self._dirs) else None
        return found

    def _unchanged(self) -> bool:
        """Whether nothing watched changed since the last call; False when a watch is new
        (what happened before it is unknown) or cannot be had. Every watch is asked, so each
        call starts every one afresh."""
        unchanged = True
        if self._mounts is None:
            try:
                self._mounts = MountTableWatch()
            except OSError:
                return False
        if self._mounts.changed():
            unchanged = False
        for directory, names in self._dirs.items():
            watch = self._watches.get(directory)
            if watch is not None and not watch.broken:
                changes = watch.changes()
                if changes is None or changes & names:
                    unchanged = False
                if not watch.broken:
                    continue
            if watch is not None:
                watch.close()
            unchanged = False
            try:
                self._watches[directory] = DirectoryWatch(directory)
            except OSError:
                self._watches.pop(directory, None)
        return unchanged

    def close(self) -> None:
        for watch in self._watches.values():
            watch.close()
        self._watches.clear()
        if self._mounts is not None:
            self._mounts.close()
            self._mounts = None
        self._kept = None
