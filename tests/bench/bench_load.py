"""Load and validate a directory of 1000 unit files: cold, then re-loaded unchanged (cached).

    .venv/bin/python tests/bench/bench_load.py [-n 1000] [--rounds 5]

Targets on a 2-core machine: cold load under 1 s; re-loading unchanged files under 100 ms. The
units are realistic (every section, human spellings). Two re-load figures are printed: files
hashed again (just written: within the racy window, so the cache reads and hashes each file) and
files trusted by stat (older than the racy window, as on a real host between reloads).
Prints figures only; not a pass/fail test.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from supervisor.unit.loader import UnitLoader

UNIT = """\
# unit {i}: generated for the load benchmark
[service]
exec = ["/usr/bin/python3", "-m", "http.server", "{port}"]
env = {{ LANG = "C.UTF-8", INSTANCE = "{i}" }}
stop_signal = "SIGINT"
stop_timeout = "5s"
after = [{after}]

[sandbox]
mounts = [
  {{ source = "/srv/www", target = "/srv", read_only = true }},
  {{ type = "tmpfs", target = "/cache", size = "16M" }},
]

[resources]
memory_max = "{mem}M"
memory_high = "{high}M"
swap_max = "0"
cpu_max = 0.5
pids_max = 128

[restart]
policy = "on-failure"
delay = "250ms"
max_delay = "1m"

[security]
capabilities = ["NET_BIND_SERVICE", "CHOWN", "SETUID", "SETGID"]

[health]
tcp = {port}
interval = "10s"
"""


def write_units(directory: Path, count: int) -> None:
    for i in range(count):
        after = f'"unit{i - 1:04d}"' if i % 10 else ""  # chains of 10, for the cycle check
        text = UNIT.format(i=i, port=8000 + i, after=after, mem=64 + i % 64, high=48 + i % 16)
        (directory / f"unit{i:04d}.toml").write_text(text)


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def report(label: str, times: list[float], target: float) -> None:
    median = statistics.median(times)
    verdict = "ok" if median < target else "OVER TARGET"
    print(
        f"{label:<38} median {median * 1000:7.1f} ms   min {min(times) * 1000:7.1f} ms   "
        f"(target < {target * 1000:.0f} ms: {verdict})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="units in the directory")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sbx-bench-load-") as tmp:
        directory = Path(tmp)
        write_units(directory, args.n)
        check = UnitLoader(host_checks=False).load_directory(directory)
        assert len(check.specs) == args.n and not check.errors, check.errors

        print(f"{args.n} units, {os.cpu_count()} CPUs, {args.rounds} rounds each")
        report(
            "cold load + validate",
            timed(lambda: UnitLoader(host_checks=False).load_directory(directory), args.rounds),
            1.0,
        )
        report(
            "cold, with host checks",
            timed(lambda: UnitLoader().load_directory(directory), args.rounds),
            1.0,
        )
        warm = UnitLoader()
        warm.load_directory(directory)
        report(
            "re-load unchanged (hashed again)",
            timed(lambda: warm.load_directory(directory), args.rounds),
            0.1,
        )

        old = time.time() - 3600  # as files look between real reloads: older than the racy window
        for path in directory.iterdir():
            os.utime(path, (old, old))
        trusted = UnitLoader()
        trusted.load_directory(directory)
        report(
            "re-load unchanged (trusted by stat)",
            timed(lambda: trusted.load_directory(directory), args.rounds),
            0.1,
        )


if __name__ == "__main__":
    main()
