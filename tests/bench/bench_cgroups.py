"""Benchmark the cgroup layer on this host (as root): prints medians.

- create+configure+destroy: `Manager.create` with a full `Limits`, then `destroy`, N times.
- OOM-event latency: a memhog in a 32M cgroup writes a CLOCK_MONOTONIC timestamp after each
  1 MiB it touches; the last one it wrote before dying bounds the kill time from below, so
  `event time - last timestamp` is the kill-to-notification latency (plus at most one step).

    .venv/bin/python tests/bench/bench_cgroups.py [-n 50] [--oom 5]
    ../shared/vm/run -- .venv/bin/python tests/bench/bench_cgroups.py   # on cgroup v2
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import statistics
import sys
import time

from supervisor import cgroups
from supervisor.cgroups import Limits, OomEvent, UnitCgroup

M = 1 << 20
ROOT = "/sys/fs/cgroup"
FULL = Limits(memory_max=256 * M, memory_high=200 * M, swap_max=0, cpu_max=0.5, cpu_weight=100,
              pids_max=256, io_weight=100)  # fmt: skip
MEMHOG = (
    "import os, time\n"
    "chunks = []\n"
    "while True:\n"
    "    chunks.append(b'\\1' * (1 << 20))\n"
    "    os.write(1, b'%.6f\\n' % time.monotonic())\n"
)


def bench_lifecycle(manager: cgroups.Manager, n: int) -> list[float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        manager.create(f"bench-{i}", FULL).destroy()
        times.append(time.perf_counter() - t0)
    return times


def spawn(cg: UnitCgroup, argv: list[str], stdout: int) -> int:
    procs = [os.fsencode(p) for p in cg.procs_files()]
    pid = os.fork()
    if pid == 0:
        try:
            for p in procs:
                fd = os.open(p, os.O_WRONLY)
                os.write(fd, b"0")
                os.close(fd)
            os.dup2(stdout, 1)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    return pid


def oom_latency(manager: cgroups.Manager) -> float:
    cg = manager.create("bench-oom", Limits(memory_max=32 * M, swap_max=0))
    loop = asyncio.new_event_loop()
    got: asyncio.Future[float] = loop.create_future()

    def on_oom(event: OomEvent) -> None:
        if not got.done():
            got.set_result(time.monotonic())

    watch = cg.watch_oom(loop, on_oom)
    r, w = os.pipe()
    try:
        pid = spawn(cg, [sys.executable, "-c", MEMHOG], w)
        os.close(w)
        t_event = loop.run_until_complete(asyncio.wait_for(got, 60))
        os.waitpid(pid, 0)
        with os.fdopen(r) as f:
            stamps = f.read().split()
        return t_event - float(stamps[-1])
    finally:
        watch.close()
        loop.close()
        cg.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=50, help="create+destroy rounds")
    parser.add_argument("--oom", type=int, default=5, help="OOM latency rounds")
    args = parser.parse_args()
    parent = f"sandboxd-bench-{os.getpid()}"
    manager = cgroups.new(parent)
    try:
        life = bench_lifecycle(manager, args.n)
        print(f"cgroup v{manager.version}, parent {parent}")
        print(
            f"create+configure+destroy: median {statistics.median(life) * 1e3:.2f} ms, "
            f"min {min(life) * 1e3:.2f} ms, max {max(life) * 1e3:.2f} ms (n={args.n})"
        )
        lat = [oom_latency(manager) for _ in range(args.oom)]
        print(
            f"OOM kill -> notification: median {statistics.median(lat) * 1e3:.1f} ms, "
            f"max {max(lat) * 1e3:.1f} ms (n={args.oom})"
        )
    finally:
        for unit in manager.list_units():
            cg = manager.open(unit)
            if cg is not None:
                cg.destroy()
        for d in glob.glob(f"{ROOT}/{parent}") + glob.glob(f"{ROOT}/*/{parent}"):
            if not os.path.islink(os.path.dirname(d)):
                os.rmdir(d)


if __name__ == "__main__":
    main()
