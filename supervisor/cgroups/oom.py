"""OOM-kill notification on the event loop, without threads.

v2: the kernel calls `cgroup_file_notify()` on `memory.events` when its counters change, which
inotify reports as IN_MODIFY. v1: an eventfd registered through `cgroup.event_control` on
`memory.oom_control` is signalled when the cgroup enters OOM. Either way the fd goes to
`loop.add_reader`, and on each wakeup the `oom_kill` counter is re-read: the callback fires only
when it grew, so an "oom" event that ended without a kill, a "max" event, or a plain SIGKILL of
the service never looks like an OOM kill.

The wakeup can precede the kill (v1 signals the eventfd before the OOM killer picks a victim;
v2 reports "oom" before "oom_kill" and rate-limits notifications to one per 20 ms), so after a
wakeup that did not move the counter it is re-read a few times over ~200 ms.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from supervisor.cgroups import files
from supervisor.cgroups.base import OomEvent
from supervisor.errors import CgroupError
from supervisor.linux import inotify

RECHECK_DELAYS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


class CounterWatch:
    """Calls back with OomEvent whenever `read_counter()` grows after a wakeup of `fd`.

    Owns `fds` (the first is the one watched) and closes them on close().
    """

    # Slots: one per unit's run, for the run's life (issue 23, the daemon's heap per unit).
    __slots__ = (
        "_callback",
        "_closed",
        "_fds",
        "_last",
        "_loop",
        "_read_counter",
        "_rechecks",
        "_unit",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        unit: str,
        fds: list[int],
        read_counter: Callable[[], int],
        callback: Callable[[OomEvent], None],
    ) -> None:
        self._loop, self._unit, self._fds = loop, unit, fds
        self._read_counter, self._callback = read_counter, callback
        self._last = read_counter()
        self._rechecks: list[asyncio.TimerHandle] = []
        self._closed = False
        loop.add_reader(fds[0], self._on_readable)

    def _on_readable(self) -> None:
        _drain(self._fds[0])
        if not self._check():
            self._schedule_rechecks()

    def _check(self) -> bool:
        if self._closed:
            return True
        try:
            value = self._read_counter()
        except CgroupError:
            return True  # the cgroup was removed: nothing more will happen
        if value <= self._last:
            return False
        self._last = value
        self._cancel_rechecks()
        self._callback(OomEvent(self._unit, value))
        return True

    def _schedule_rechecks(self) -> None:
        if not self._rechecks:
            self._rechecks = [self._loop.call_later(d, self._check) for d in RECHECK_DELAYS]

    def _cancel_rechecks(self) -> None:
        for handle in self._rechecks:
            handle.cancel()
        self._rechecks = []

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_rechecks()
        self._loop.remove_reader(self._fds[0])
        for fd in self._fds:
            os.close(fd)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def watch_memory_events(
    loop: asyncio.AbstractEventLoop,
    unit: str,
    events_path: str,
    callback: Callable[[OomEvent], None],
) -> CounterWatch:
    """v2: inotify IN_MODIFY on `memory.events`, counter `oom_kill`."""
    try:
        fd = inotify.init()
    except OSError as err:
        raise _cgroup_os_error("inotify_init1", events_path, err) from None
    try:
        inotify.add_watch(fd, events_path, inotify.IN_MODIFY)
    except OSError as err:
        os.close(fd)
        raise _cgroup_os_error("inotify_add_watch", events_path, err) from None
    try:
        return CounterWatch(
            loop, unit, [fd], lambda: files.read_keyed(events_path).get("oom_kill", 0), callback
        )
    except BaseException:
        os.close(fd)
        raise


def watch_oom_control(
    loop: asyncio.AbstractEventLoop,
    unit: str,
    cgroup_dir: str,
    callback: Callable[[OomEvent], None],
) -> CounterWatch:
    """v1: eventfd + cgroup.event_control on `memory.oom_control`, counter `oom_kill`."""
    control = os.path.join(cgroup_dir, "memory.oom_control")
    efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        cfd = os.open(control, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        os.close(efd)
        raise CgroupError(f"failed to open {control}: {os.strerror(err.errno or 0)}") from err
    try:
        files.write(os.path.join(cgroup_dir, "cgroup.event_control"), f"{efd} {cfd}")
    except BaseException:
        os.close(efd)
        raise
    finally:
        # The kernel holds only the eventfd and the cgroup from here on (the registration
        # lives until the eventfd is closed or the cgroup goes): one fd a unit, not two, for
        # a daemon with thousands of units under its fd limit (issue 23).
        os.close(cfd)
    try:
        return CounterWatch(
            loop, unit, [efd], lambda: files.read_keyed(control).get("oom_kill", 0), callback
        )
    except BaseException:
        os.close(efd)
        raise


def _cgroup_os_error(call: str, path: str, err: OSError) -> CgroupError:
    return CgroupError(f"{call} on {path} failed: {os.strerror(err.errno or 0)}")
