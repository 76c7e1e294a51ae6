"""Benchmark: the daemon's side of one `sandboxctl top` frame at 1000 units (target < 50 ms).

Creates N real unit cgroups on this host (as root; empty, no processes), then times
`UnitCgroup.sample()` over all of them, which is what `GET /v1/top` does per unit besides
copying a few fields, and removes them again. The first round opens the files the later rounds
read through kept fds (cgroups/files.py's KeptFile), as a daemon's first and later frames do.
Prints figures; it is not a pass/fail test.

    .venv/bin/python tests/bench/bench_top.py [--units 1000] [--rounds 20]
    ../shared/vm/run -- .venv/bin/python tests/bench/bench_top.py   # on cgroup v2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

from supervisor import cgroups
from supervisor.cgroups import Limits
from supervisor.linux import fdlimit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    fdlimit.raise_soft_limit()  # as the daemon does: the kept view files need the room
    manager = cgroups.new(f"sandboxd-bench-top-{os.getpid()}")
    units = []
    try:
        for i in range(args.units):
            units.append(manager.create(f"u{i}", Limits(memory_max=64 << 20)))
        times = []
        for _ in range(args.rounds + 1):
            began = time.perf_counter()
            for unit in units:
                unit.sample()
            times.append((time.perf_counter() - began) * 1000)
        first, later = times[0], times[1:]
        print(f"cgroup v{manager.version}, {args.units} units: one frame's cgroup reads "
              f"median {statistics.median(later):.1f} ms, max {max(later):.1f} ms "
              f"(the first, opening the files: {first:.1f} ms)")  # fmt: skip
    finally:
        for unit in units:
            unit.destroy()
        for path in _parents(manager):
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(path)


def _parents(manager: cgroups.Manager) -> list[str]:
    base = getattr(manager, "base", None)
    if base is not None:  # v2: one directory
        return [base]
    return sorted(set(getattr(manager, "_bases", {}).values()))


if __name__ == "__main__":
    main()
