"""Who the OOM killer killed: the kernel's `oom-kill:` lines from /dev/kmsg.

The cgroup's counter says *that* a process was OOM-killed; only the kernel log says *which*
one. Each `oom-kill:constraint=...,oom_memcg=<path>,task_memcg=<path>,task=<comm>,pid=<pid>`
record names the victim's cgroup, command and host PID. The daemon reads /dev/kmsg from its
end (old records are not replayed) with `loop.add_reader`; which unit a victim's cgroup is,
the cgroup manager says (`Manager.unit_of`).
Best effort: without /dev/kmsg (containers, lockdown) victims are simply not reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from supervisor.log import get_logger

log = get_logger()
_OOM = re.compile(rb"oom-kill:.*?\btask_memcg=(?P<memcg>[^,]*),task=(?P<task>.*?),pid=(?P<pid>\d+)")


@dataclass(frozen=True)
class Victim:
    memcg: str  # cgroup path of the victim, relative to the (memory) hierarchy root
    command: str
    pid: int


def parse(record: bytes) -> Victim | None:
    """A /dev/kmsg record ("prio,seq,usec,flags;message") → the OOM victim it reports."""
    _, _, message = record.partition(b";")
    match = _OOM.match(message)
    if match is None:
        return None
    return Victim(
        match["memcg"].decode(errors="replace"),
        match["task"].decode(errors="replace"),
        int(match["pid"]),
    )


class KmsgWatch:
    def __init__(self, loop: asyncio.AbstractEventLoop, on_victim: Callable[[Victim], None]):
        self._loop, self._on_victim = loop, on_victim
        self._fd = -1
        try:
            fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("daemon.no_kmsg", error=str(exc), effect="OOM victims not identified")
            return
        os.lseek(fd, 0, os.SEEK_END)
        self._fd = fd
        loop.add_reader(fd, self._read)

    def _read(self) -> None:
        for _ in range(256):  # bounded work per wake-up
            try:
                record = os.read(self._fd, 8192)
            except BlockingIOError:
                return
            except BrokenPipeError:  # the ring buffer overwrote records we had not read
                continue
            victim = parse(record)
            if victim is not None:
                self._on_victim(victim)

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
