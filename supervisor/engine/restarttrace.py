"""Where a restart's time goes: CLOCK_MONOTONIC stamps from the end of one run to the exec of
the next, for the bench (`python -m tests.bench --only oom --trace`).

Off unless the daemon runs with `SANDBOXD_TRACE_RESTARTS=1` (read once, by daemon.py, into
`Host.trace_restarts`): then each restart by the policy logs one `unit.restart_trace` line
whose `stages` are `[stage, ms since the first stamp]` in time order (`t0_ns`: that first
stamp, CLOCK_MONOTONIC), and each launch is traced
(the launcher's and PID 1's own stages come back on the sync pipe, as with the bench's launch
`--trace`). Untraced, a run keeps two integers (when its end and its first OOM kill were seen)
and nothing else is timed.

The stamps are `time.monotonic_ns()`, not `Host.monotonic` (a test's frozen clock): the same
clock as the launcher's stamps and, up to the kernel's clock drift, the kernel log's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

ENV = "SANDBOXD_TRACE_RESTARTS"

# The engine's stages, in the order a restart takes them (the launch's own come in between).
OOM_SEEN = "daemon: OOM kill seen (oom watch)"
EXIT_SEEN = "daemon: exit seen (pidfd readable)"
RUN_CLEANED = "daemon: run cleaned up (fds closed, cgroup renamed away)"
DECIDED = "daemon: restart decided (exit recorded, backoff)"
LAUNCH_BEGUN = "daemon: launch begun"
CGROUP_MADE = "daemon: cgroup ready (made ahead, or made now)"
PID1_REPORTED = "daemon: launcher answered (PID 1 waits for Go)"
EXEC_SEEN = "daemon: exec observed"
RUNNING = "daemon: running (unit.started logged)"


def enabled() -> bool:
    return os.environ.get(ENV, "") == "1"


def now() -> int:
    return time.monotonic_ns()


class RestartTrace:
    """The stamps of one restart, as they come (not necessarily in time order: the launcher's
    arrive after the daemon's own later ones). `OFF` takes none."""

    def __init__(self, on: bool = True) -> None:
        self.on = on
        self.stamps: list[tuple[str, int]] = []

    def mark(self, stage: str, ns: int | None = None) -> None:
        if self.on:
            self.stamps.append((stage, now() if ns is None else ns))

    def extend(self, stamps: Iterable[tuple[str, int]]) -> None:
        if self.on:
            self.stamps.extend(stamps)

    def stages(self) -> list[list[str | float]]:
        """`[stage, ms since the first stamp]`, in time order (stages at the same time keep
        the order they were marked in)."""
        ordered = sorted(self.stamps, key=lambda s: s[1])
        if not ordered:
            return []
        first = ordered[0][1]
        return [[stage, round((ns - first) / 1e6, 3)] for stage, ns in ordered]

    @property
    def first_ns(self) -> int | None:
        return min((ns for _, ns in self.stamps), default=None)


OFF = RestartTrace(on=False)
