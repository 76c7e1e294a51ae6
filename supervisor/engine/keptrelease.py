"""Gives the views' kept cgroup fds back once the views have gone quiet.

The list view and `top` read each unit's cgroup files through fds they keep (cgroups/files.py,
`KeptFile`: 2 ms for 1000 units instead of 25 ms). Each such fd costs the kernel ~4.8 KiB
while it is open, and a `top` frame keeps four or five a unit (measured on v1, 300 units: the
daemon's kernel memory +15.6 KiB a unit), so an idle daemon of 1000 sandboxes once asked for
one would hold ~20 MB of kernel memory for views nobody is looking at. A timer, armed when a file
keeps an fd, checks every `idle` seconds whether a view read one since; the first quiet
period closes them all. Nothing runs while no fd is kept: an idle daemon never wakes for it.
"""

from __future__ import annotations

import asyncio

from supervisor import cgroups

# How long the views must have read nothing before their fds are closed: a poller (`watch
# sandboxctl status`, a metrics scrape) that reads more often than this keeps them, and its
# reads stay one pread per file. The fds live between one and two such periods past the last read.
KEPT_IDLE_SECONDS = 30.0


class KeptFilesRelease:
    def __init__(self, loop: asyncio.AbstractEventLoop, idle: float = KEPT_IDLE_SECONDS) -> None:
        self._loop, self._idle = loop, idle
        self._timer: asyncio.TimerHandle | None = None
        cgroups.on_kept_file(self._kept)

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def _kept(self) -> None:
        if self._timer is None:
            self._timer = self._loop.call_later(self._idle, self._check)

    def _check(self) -> None:
        self._timer = None
        if not cgroups.release_unread_files():
            self._timer = self._loop.call_later(self._idle, self._check)

    def close(self) -> None:
        cgroups.on_kept_file(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
