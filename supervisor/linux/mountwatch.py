"""Whether this process's mount table may have changed since we last asked (proc(5)).

An open /proc/self/mountinfo reports POLLPRI|POLLERR to poll(2) once after each change to its
mount namespace (a mount, an unmount, a remount: the namespace's event counter moved), and
the poll itself re-arms it: one poll(2) with no timeout answers, with nothing read. Mounts that
propagate into the namespace from another count too; that is what a cache of mount facts
(statvfs flags, what a path is) must be told.
"""

from __future__ import annotations

import os
import select

_CHANGED = select.POLLPRI | select.POLLERR


class MountTableWatch:
    """`changed()`: True at the first call and whenever the mount table changed since the last."""

    def __init__(self) -> None:
        self._fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._fd, _CHANGED)
        self._first = True

    def changed(self) -> bool:
        # Polled every time, the first too: it arms the event for the next call.
        events = self._poll.poll(0)
        first, self._first = self._first, False
        return first or any(mask & _CHANGED for _, mask in events)

    def close(self) -> None:
        if self._fd >= 0:
            self._poll.unregister(self._fd)
            os.close(self._fd)
            self._fd = -1
