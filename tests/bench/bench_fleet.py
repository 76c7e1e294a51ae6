"""The fleet: its speed goals per unit, and at scale.

    sudo .venv/bin/python -m tests.bench.bench_fleet [-n 500] [--rounds 30] [--only latency,scale]

Latency (issue 28's goals): one node (n1) and a 3-member etcd. --rounds times, in a fixed
sequence, one unit key `PREFIX/nodes/n1/units/latK` is written (through etcd's JSON gateway, as
the node reads it) and timed until the node's status shows it running (goal <= 2 s) and until
`PREFIX/status/n1/latK` in etcd says so; its value is changed, timed until the node runs the
new spec (a new PID) and until the report has that PID; its service is killed (the unit has
`[restart] policy = "no"`, so its state changes once, to `exited`), timed until the node's
status and the report in etcd show it (goal <= 1 s, counted from the kill: the change itself
comes a little later, so the figure is an upper bound); the key is deleted, timed until the
report is gone. Both sides are polled every 5 ms. Median and p95 are printed with the
machine's load: figures from a busy machine say little about an idle one.

Scale: N units applied to two nodes through etcd (`sandboxctl fleet apply --all`) vs the same
N units as local files on the same two nodes (written, then `reload`).

Both sides run two real daemons (nodes n1, n2) on this host, so 2N sandboxes (`sleep`) in all.
The fleet side is timed from the start of `fleet apply` to every unit running on both nodes,
and to every one of the 2N reports in etcd saying `running`; the local side from the reload
to every unit running on both. The etcd cluster is a real 3-member one on loopback
(tests/support/etcd_cluster.py), its `--max-txn-ops` raised so that one transaction takes
all N units (etcd's default is 128).

Everything is cleaned up: the daemons stop their units, the etcd members are killed by PID
and their data dirs removed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import kit
from tests.support.etcd_cluster import EtcdCluster
from tests.support.waiting import wait_for

PREFIX = "/sandboxd/v1"
UNIT = '[service]\nexec = ["/bin/sleep", "100000"]\nstop_timeout = "300ms"\n'
TIMEOUT = 900.0
# A service killed once goes to `exited` and stays there: one change to report. `sleep` as
# PID 1 ignores SIGTERM, so a changed value's restart waits out the 300 ms stop_timeout.
ONCE = (
    '[service]\nexec = ["/bin/sleep", "100000"]\nstop_timeout = "300ms"\n[restart]\npolicy = "no"\n'
)
RUNS_GOAL = 2.0  # seconds from the key written to the unit running on its node
REPORT_GOAL = 1.0  # seconds from a change of the unit's state to its report in etcd
POLL = 0.005


def all_running(daemon: Any, n: int) -> bool:
    units = daemon.status()
    return len(units) == n and all(u["state"] == "running" for u in units.values())


def reports_running(etcd: EtcdCluster, n: int) -> bool:
    found = etcd.get_prefix(f"{PREFIX}/status/")
    return len(found) == 2 * n and all(json.loads(v)["state"] == "running" for v in found.values())


def until(condition: Callable[[], bool], began: float) -> float:
    wait_for(condition, TIMEOUT, interval=0.2)
    return time.perf_counter() - began


def gateway(etcd: EtcdCluster, call: str, **body: str) -> dict[str, Any]:
    """One request to etcd's JSON gateway (keys and values base64), as the node makes them:
    an etcdctl process started per poll would cost more than what is measured."""
    data = {k: base64.b64encode(v.encode()).decode() for k, v in body.items()}
    req = urllib.request.Request(f"{etcd.endpoints[0]}/v3/kv/{call}", json.dumps(data).encode(),
                                 {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict[str, Any] = json.load(resp)
    return answer


def reported(etcd: EtcdCluster, unit: str) -> dict[str, Any] | None:
    kvs = gateway(etcd, "range", key=f"{PREFIX}/status/n1/{unit}").get("kvs", [])
    return json.loads(base64.b64decode(kvs[0]["value"])) if kvs else None


def times(began: float, checks: dict[str, Callable[[], bool]]) -> dict[str, float]:
    """Seconds from `began` until each check first held, all polled in one loop."""
    seen: dict[str, float] = {}
    deadline = began + 120
    while len(seen) < len(checks):
        for name, check in checks.items():
            if name not in seen and check():
                seen[name] = time.perf_counter() - began
        if time.perf_counter() > deadline:
            raise TimeoutError(f"after 120 s, still waiting for {sorted(set(checks) - set(seen))}")
        time.sleep(POLL)
    return seen


def latency(rounds: int, make: Callable[[], Any]) -> dict[str, list[float]]:
    etcd = EtcdCluster()
    figures: dict[str, list[float]] = {}
    try:
        etcd.start()
        node = make()
        node.config.write_text(f'[cluster]\nendpoints = {json.dumps(etcd.endpoints)}\n'
                               f'node = "n1"\n')  # fmt: skip
        node.start()
        wait_for(lambda: bool(etcd.get_prefix(f"{PREFIX}/nodes/n1/alive")), 60)
        for k in range(rounds):
            unit, key = f"lat{k}", f"{PREFIX}/nodes/n1/units/lat{k}"

            def state(unit: str = unit) -> str | None:
                u = node.status().get(unit)
                return None if u is None else str(u["state"])

            def report_state(unit: str = unit) -> str | None:
                r = reported(etcd, unit)
                return None if r is None else str(r["state"])

            began = time.perf_counter()
            gateway(etcd, "put", key=key, value=ONCE)
            got = times(
                began,
                {
                    "write -> running on the node": lambda: state() == "running",
                    "write -> reported running": lambda: report_state() == "running",
                },
            )
            first = node.unit(unit)["pid"]

            def restarted(unit: str = unit, first: int = first) -> bool:
                u = node.status().get(unit, {})
                return u.get("state") == "running" and u.get("pid") != first

            def restart_reported(unit: str = unit, first: int = first) -> bool:
                r = reported(etcd, unit) or {}
                return r.get("state") == "running" and r.get("pid") != first

            began = time.perf_counter()
            gateway(etcd, "put", key=key, value=ONCE.replace("100000", "100001"))
            got |= times(
                began,
                {
                    "change -> restarted on node": restarted,
                    "change -> restart reported": restart_reported,
                },
            )
            pid = node.unit(unit)["pid"]
            began = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            got |= times(
                began,
                {
                    "kill -> node shows it": lambda: state() not in (None, "running"),
                    "kill -> reported": lambda: report_state() not in (None, "running"),
                },
            )
            began = time.perf_counter()
            gateway(etcd, "deleterange", key=key)
            got |= times(began, {"delete -> report gone": lambda: report_state() is None})
            for what, seconds in got.items():
                figures.setdefault(what, []).append(seconds)
        node.stop()  # before etcd goes: it gives its lease back
        return figures
    finally:
        etcd.close()


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(len(xs) * 0.95) - 1)]


def latency_lines(figures: dict[str, list[float]]) -> list[str]:
    goals = {"write -> running on the node": RUNS_GOAL, "kill -> reported": REPORT_GOAL}
    lines = []
    for what, xs in figures.items():
        line = (f"  {what:<30} median {statistics.median(xs) * 1000:7.1f} ms, "
                f"p95 {p95(xs) * 1000:7.1f} ms, max {max(xs) * 1000:7.1f} ms")  # fmt: skip
        if what in goals:
            met = p95(xs) <= goals[what]
            line += f"  goal <= {goals[what]:.0f} s (p95): {'met' if met else 'MISSED'}"
        lines.append(line)
    return lines


def fleet_side(n: int, units: Path, make: Callable[[], Any]) -> dict[str, float]:
    etcd = EtcdCluster(extra_args=["--max-txn-ops", str(n + 16)])
    try:
        etcd.start()
        nodes = []
        for name in ("n1", "n2"):
            d = make()
            d.config.write_text(f'[cluster]\nendpoints = {json.dumps(etcd.endpoints)}\n'
                                f'node = "{name}"\n')  # fmt: skip
            d.start()
            nodes.append(d)
        began = time.perf_counter()
        apply = subprocess.run(
            [sys.executable, "-m", "supervisor.cli.main", "fleet", "apply", str(units), "--all",
             "--endpoints", ",".join(etcd.endpoints)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if apply.returncode != 0:
            raise RuntimeError(f"fleet apply: {apply.stderr.strip()}")
        applied = time.perf_counter() - began
        running = until(lambda: all(all_running(d, n) for d in nodes), began)
        reported = until(lambda: reports_running(etcd, n), began)
        for d in nodes:  # before etcd goes: they give their leases back
            d.stop()
        return {"apply": applied, "running": running, "reported": reported}
    finally:
        etcd.close()


def local_side(n: int, make: Callable[[], Any]) -> dict[str, float]:
    nodes = []
    for _ in range(2):
        d = make()
        d.start()
        nodes.append(d)
    for d in nodes:
        for i in range(n):
            d.write_unit(f"u{i}", UNIT)
    began = time.perf_counter()
    for d in nodes:
        d.signal(signal.SIGHUP)
    return {"running": until(lambda: all(all_running(d, n) for d in nodes), began)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=500, help="units per node (default 500)")
    parser.add_argument("--rounds", type=int, default=30, help="latency rounds (default 30)")
    parser.add_argument("--only", default="latency,scale", help="latency, scale or both")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    if "latency" in only:
        load = os.getloadavg()[0]
        with kit.daemon_factory("bench-fleet") as make:
            figures = latency(args.rounds, make)
        print(f"one node, {args.rounds} rounds (load {load:.1f} at start, "
              f"{os.getloadavg()[0]:.1f} at end, {os.cpu_count()} CPUs)")  # fmt: skip
        print("\n".join(latency_lines(figures)), flush=True)
    if "scale" not in only:
        return
    with tempfile.TemporaryDirectory(prefix="sbx-bench-fleet-") as tmp:
        units = Path(tmp)
        for i in range(args.n):
            (units / f"u{i}.toml").write_text(UNIT)
        with kit.daemon_factory("bench-fleet") as make:
            fleet = fleet_side(args.n, units, make)
        with kit.daemon_factory("bench-fleet") as make:
            local = local_side(args.n, make)
    print(f"2 nodes x {args.n} units")
    print(f"  fleet apply --all: written in {fleet['apply']:.2f} s, all running after "
          f"{fleet['running']:.2f} s, all {2 * args.n} reports running after "
          f"{fleet['reported']:.2f} s")  # fmt: skip
    print(f"  local files + reload: all running after {local['running']:.2f} s")


if __name__ == "__main__":
    main()
