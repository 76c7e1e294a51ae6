"""The state writer's CPU per record save, as the store writes them, in given directories.

    sudo .venv/bin/python -m tests.bench.bench_statesave [DIR ...] [-n 300] [--runs 3]

Two patterns over N units: a start storm (two saves a unit: `starting`, then `running` with
its PID) and a unit's later saves (eight a unit, as restarts make them). Each is timed in the
writing thread's CPU (thread_time), with safefs.write_atomic (a fresh temp renamed over the
record, as the store wrote before) and safefs.write_swapped (the unit's kept temp exchanged
with it, what the store writes now), interleaved, the median of RUNS printed. Every run
works in a fresh directory of its own under DIR, removed afterwards.

Why directories matter: on ext4 without a journal each inode allocation skips the inodes its
block group freed in the last ~30 s, so a directory under a busy /tmp costs several times a
quiet one's; on a tmpfs the whole save is a few tens of microseconds. A run's cleanup frees
its inodes too, which the next run's allocations skip for those ~30 s: each figure includes
the churn before it, as a daemon's storm includes its neighbours' (and a previous run's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

from supervisor.linux import safefs

RECORD = b'{"format": "sandboxd-unit-state/1", "spec": {"x": "' + b"y" * 1500 + b'"}}'
PATTERNS = (("start storm, 2 saves a unit", 2), ("later saves, 8 a unit", 8))

Write = Callable[[int, str, bytes, int], None]


def cpu_per_save(base: str, write: Write, saves: int, units: int) -> float:
    """ms of this thread's CPU per save, `saves` rounds over `units` records in a fresh dir."""
    directory = tempfile.mkdtemp(dir=base, prefix="sbx-bench-statesave-")
    fd = safefs.open_dir(directory)
    try:
        t0 = time.thread_time()
        for n in range(saves):
            for unit in range(units):
                write(fd, f"s{unit:04d}.json", RECORD + b"%d" % n, 0o600)
        return (time.thread_time() - t0) / (saves * units) * 1000
    finally:
        for name in os.listdir(fd):
            os.unlink(name, dir_fd=fd)
        os.close(fd)
        os.rmdir(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="*", default=["/tmp", "/var/lib"])
    parser.add_argument("-n", type=int, default=300, help="units")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"load {os.getloadavg()[0]:.1f}; ms of CPU per save, median of {args.runs}")
    for base in args.dirs:
        for what, saves in PATTERNS:
            fresh: list[float] = []
            kept: list[float] = []
            for _ in range(args.runs):  # interleaved: the host's load moves both alike
                fresh.append(cpu_per_save(base, safefs.write_atomic, saves, args.n))
                kept.append(cpu_per_save(base, safefs.write_swapped, saves, args.n))
            print(f"{base}: {what}: fresh temp (write_atomic) {statistics.median(fresh):.3f}, "
                  f"kept temp (write_swapped) {statistics.median(kept):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
