"""Benchmark `sandboxctl status` on 1000 units (target: under 300 ms), as a user runs it.

The real API server (aiohttp on a Unix socket) serves a fake controller with N units in a
realistic mix of states; each sample is a fresh `sandboxctl` process (interpreter start,
imports, request, JSON, table), timed from fork to exit. Also times the API alone (one
GET /v1/units over a kept-alive connection) to show where the time goes. Prints medians and
p95 and exits 1 if the median misses the target. The same timings against a real daemon
running 1000 real sandboxes (cgroup reads included) are part of bench_density.py.

    .venv/bin/python tests/bench/bench_status.py [-n 1000] [--runs 20]
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from supervisor.api import auth
from supervisor.api.testing import FakeController, ServerThread, many_units
from tests.support.daemon_kit import UnixHTTPConnection

TARGET_MS = 300.0


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"median {statistics.median(ordered):6.1f} ms  p95 {p95:6.1f} ms  min {ordered[0]:6.1f} ms"
    )


class Timing:
    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []  # user + system of the child: less sensitive to host load
        self.size = 0

    def line(self) -> str:
        cpu = statistics.median(self.cpu)
        return f"{_ms(self.wall)}  cpu {cpu:6.1f} ms" + (
            f"  ({self.size} bytes)" if self.size else ""
        )


def time_cli(sock: Path, argv: list[str], runs: int) -> Timing:
    env = {**os.environ, "SANDBOXD_SOCKET": str(sock)}
    exe = shutil.which("sandboxctl", path=os.path.dirname(sys.executable))
    command = [exe] if exe else [sys.executable, "-m", "supervisor.cli.main"]
    timing = Timing()
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        out = subprocess.run(command + argv, env=env, capture_output=True, check=True).stdout
        timing.wall.append((time.perf_counter() - start) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        timing.cpu.append(cpu * 1000)
        timing.size = len(out) if argv != ["--version"] else 0
    return timing


def time_api(sock: Path, runs: int) -> list[float]:
    conn = UnixHTTPConnection(str(sock), timeout=30)
    samples = []
    try:
        for _ in range(runs):
            start = time.perf_counter()
            conn.request("GET", "/v1/units")
            response: http.client.HTTPResponse = conn.getresponse()
            response.read()
            samples.append((time.perf_counter() - start) * 1000)
    finally:
        conn.close()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--units", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    sock_dir = Path(tempfile.mkdtemp(prefix="sbx-bench-", dir="/tmp"))
    controller = FakeController(many_units(args.units))
    try:
        with ServerThread(controller, sock_dir / "control.sock", auth.Policy(None)) as server:
            time_cli(server.path, ["status"], 2)  # warm the page cache
            startup = time_cli(server.path, ["--version"], args.runs)
            table = time_cli(server.path, ["status"], args.runs)
            as_json = time_cli(server.path, ["status", "--json"], args.runs)
            api = time_api(server.path, args.runs)
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)
    print(f"sandboxctl status, {args.units} units, {args.runs} runs each (fresh process per run)")
    print(f"  sandboxctl --version (startup only)  {startup.line()}")
    print(f"  sandboxctl status                    {table.line()}")
    print(f"  sandboxctl status --json             {as_json.line()}")
    print(f"  GET /v1/units alone (kept-alive)     {_ms(api)}")
    print(
        f"  load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cpus"
    )
    worst = max(statistics.median(table.wall), statistics.median(as_json.wall))
    verdict = "ok" if worst < TARGET_MS else "too slow"
    print(f"target: median under {TARGET_MS:.0f} ms: {verdict}")
    return 0 if worst < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
