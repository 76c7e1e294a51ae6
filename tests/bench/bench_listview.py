"""The daemon's list view (GET /v1/units) at N running units, from outside and from inside.

    sudo .venv/bin/python -m tests.bench.bench_listview [-n 1000] [--requests 300] [--profile]

One real daemon (listview_probe.py wraps it) runs N idle sandboxes (bench_density's `sleep`
units); once all run, GET /v1/units is asked REQUESTS times over one kept-alive connection
after a warm-up, as bench_density's "daemon list view" row does. Printed: the round trip
(median, p95, max: wall clock, moved by the host's load), the daemon's CPU per request
(/proc schedstat over all of them: the figure to compare before/after on a shared machine),
the handler's CPU per call as the daemon measured it (the answer built, its send not
included), and the daemon's garbage collections meanwhile (how many, in which generation,
how long: the spread's first suspect). --profile adds the handler's cProfile.

Everything is cleaned up: the daemon stops its units and its directory is removed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pstats
import statistics
import time
from pathlib import Path
from typing import Any

from tests.bench.bench_density import SLEEPER, raise_nofile, start_deadline, stop_and_clean
from tests.bench.proc_cpu import cpu_seconds
from tests.support import kit
from tests.support.daemon_kit import UnixHTTPConnection

WARM_UP = 20  # requests before the measured ones: the rows' texts made, the connection open


def _spread(xs: list[float]) -> str:
    ordered = sorted(xs)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (f"median {statistics.median(ordered):6.2f}  p95 {p95:6.2f}  "
            f"min {ordered[0]:6.2f}  max {ordered[-1]:6.2f} ms")  # fmt: skip


def wait_running(daemon: Any, n: int) -> None:
    deadline = time.monotonic() + start_deadline(n)
    while True:
        states = [u["state"] for u in daemon.status().values()]
        if states.count("running") >= n:
            return
        if "failed" in states or time.monotonic() > deadline or daemon.proc.poll() is not None:
            raise RuntimeError(f"not all {n} running: {states.count('running')} are")
        time.sleep(1.0)


class Side:
    """One daemon on N units, run from `tree` (a checkout with its own .venv: /work/main for
    the code before a change) under the probe, with a kept-alive connection to it."""

    def __init__(self, tree: Path, n: int, profile: bool) -> None:
        self.tree, self.n = tree, n
        self.daemon = kit.new_daemon("bench-listview")
        self.probe_out = self.daemon.base / "listview.json"
        self.wall: list[float] = []
        self.cpu_s = 0.0
        self.conn: UnixHTTPConnection | None = None
        self.profile = profile

    def start(self) -> None:
        daemon = self.daemon
        daemon.config.write_text('log_max_size = "16K"\nlog_keep = 1\n')
        for i in range(self.n):
            name = f"s{i:04d}"
            daemon.write_unit(name, kit.unit_text(SLEEPER, daemon, name,
                                                  service={"stop_timeout": "200ms"}))  # fmt: skip
        # The tree's own interpreter, -P: its `supervisor` is the tree's (its venv's editable
        # install), not the one of the directory this bench runs from. The daemon's cwd is the
        # tree too: its fork server runs `-m` from there.
        wrapper = [str(self.tree / ".venv/bin/python"), "-P", str(Path(__file__).with_name(
                   "listview_probe.py")), str(self.probe_out),
                   *(["--profile"] if self.profile else []), "--"]  # fmt: skip
        here = os.getcwd()
        os.chdir(self.tree)
        try:
            daemon.start(wrapper=wrapper)
        finally:
            os.chdir(here)
        wait_running(daemon, self.n)
        self.conn = UnixHTTPConnection(str(daemon.socket), timeout=60)
        for _ in range(WARM_UP):
            _get(self.conn, {})

    def block(self, requests: int) -> None:
        """`requests` measured requests: their round trips and the daemon's CPU over them."""
        assert self.conn is not None and self.daemon.proc is not None
        pid = self.daemon.proc.pid
        c0 = cpu_seconds(pid)
        for _ in range(requests):
            t0 = time.perf_counter()
            self.size = _get(self.conn, {"X-Bench-Measure": "1"})
            self.wall.append((time.perf_counter() - t0) * 1000)
        self.cpu_s += cpu_seconds(pid) - c0

    def result(self) -> dict[str, Any]:
        assert self.conn is not None
        _get(self.conn, {"X-Bench-Dump": "1"})
        inside = json.loads(self.probe_out.read_text())
        stats = pstats.Stats(str(self.probe_out) + ".pstats") if self.profile else None
        return {"tree": str(self.tree), "n": self.n, "wall": self.wall, "bytes": self.size,
                "daemon_cpu_ms": self.cpu_s * 1000 / len(self.wall), "inside": inside,
                "profile": stats}  # fmt: skip

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        stop_and_clean(self.daemon)


def measure(trees: list[Path], n: int, requests: int, block: int,
            profile: bool) -> list[dict[str, Any]]:  # fmt: skip
    """Each tree's daemon on N units; their requests interleaved in blocks of `block`, so
    that the host's load moves every side's figures alike."""
    raise_nofile()
    sides: list[Side] = []
    try:
        for tree in trees:
            sides.append(Side(tree, n, profile))
            sides[-1].start()
        time.sleep(3)  # the start-ups' last writes and probes settle
        for _ in range(max(1, requests // block)):
            for side in sides:
                side.block(block)
        return [side.result() for side in sides]
    finally:
        for side in sides:
            side.close()


def _get(conn: UnixHTTPConnection, headers: dict[str, str]) -> int:
    conn.request("GET", "/v1/units", headers=headers)
    response: http.client.HTTPResponse = conn.getresponse()
    body = response.read()
    assert response.status == 200, body[:200]
    return len(body)


def report(out: dict[str, Any]) -> None:
    inside = out["inside"]
    gcs = inside["gc"]
    print(f"{out['tree']}: GET /v1/units at {out['n']} running units, {len(out['wall'])} "
          f"requests kept alive ({out['bytes']} bytes each)")  # fmt: skip
    print(f"  code              {inside['code']}")
    print(f"  round trip        {_spread(out['wall'])}")
    print(f"  daemon CPU        {out['daemon_cpu_ms']:6.2f} ms per request (schedstat)")
    print(f"  handler CPU       {_spread(inside['cpu_ms'])}")
    by_gen = {g: [c["ms"] for c in gcs if c["generation"] == g] for g in (0, 1, 2)}
    print(f"  collections       {len(gcs)} ({sum(c['inside'] for c in gcs)} inside the handler;"
          f" thresholds {inside['thresholds']}, frozen {inside['frozen']})")  # fmt: skip
    for g, xs in by_gen.items():
        if xs:
            print(f"    generation {g}: {len(xs)}, {_spread(xs)}")
    if out["profile"] is not None:
        out["profile"].sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="running units")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--block", type=int, default=10, help="requests per side in a row")
    parser.add_argument("--profile", action="store_true", help="cProfile the handler")
    parser.add_argument(
        "trees",
        nargs="*",
        type=Path,
        default=[Path.cwd()],
        help="checkouts to compare, each with its .venv (default: this one)",
    )
    args = parser.parse_args()
    print(f"load {os.getloadavg()}", flush=True)
    for out in measure(args.trees, args.n, args.requests, args.block, args.profile):
        report(out)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
