"""CPU time of processes, read from /proc, for benches that sum it over many processes.

/proc/PID/stat's utime and stime are in clock ticks (10 ms here), and the kernel rounds each
process's figure down on its own: a sandbox's PID 1 that ran 2.5 ms before its exec reads 0,
so a sum over 1000 of them said 0 where 2.5 s were spent. /proc/PID/task/TID/schedstat's first
field is the thread's CPU in ns (sum_exec_runtime), which sums without that loss. Reaped
children's CPU (cutime + cstime) the kernel sums in ns and rounds only once, so ticks are
right for it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
# Kernels built without CONFIG_SCHED_INFO have no schedstat: ticks there, the old figure.
HAVE_SCHEDSTAT = Path("/proc/self/schedstat").exists()


def _stat_fields(pid: int) -> list[str]:
    # The name (field 2) may hold spaces and parentheses: split after its last ")".
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """CPU `pid` has used so far, its live threads' summed, in seconds, to the ns. Threads
    that have exited are not in it (the benches' processes are single-threaded); a running
    thread's current slice is added only at its next tick or switch."""
    if not HAVE_SCHEDSTAT:
        fields = _stat_fields(pid)
        return (int(fields[11]) + int(fields[12])) / TICK
    total_ns = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):  # a thread exiting meanwhile
            total_ns += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    return total_ns / 1e9


def reaped_cpu_seconds(pid: int) -> float:
    """CPU of the children `pid` has reaped (cutime + cstime, of the whole tree below it that
    was waited for), in seconds."""
    fields = _stat_fields(pid)
    return (int(fields[13]) + int(fields[14])) / TICK


def fault_counts(pid: int) -> tuple[int, int]:
    """`pid`'s minor page faults so far and those of the children it has reaped (minflt,
    cminflt): a fork's copy-on-write and first-touch faults are counted here."""
    fields = _stat_fields(pid)
    return int(fields[7]), int(fields[8])


def children_of(pid: int) -> list[int]:
    """The live (and zombie) children of `pid`, found by their parent in /proc (the kernel here
    has no /proc/PID/task/TID/children)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                if int(_stat_fields(int(entry))[1]) == pid:
                    found.append(int(entry))
    return found


def anon_kib(pid: int) -> tuple[int, int]:
    """`pid`'s resident and anonymous memory in KiB (smaps_rollup's Rss and Anonymous)."""
    got = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            got[parts[0].rstrip(":")] = int(parts[1])
    return got["Rss"], got["Anonymous"]
