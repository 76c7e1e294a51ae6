"""The fleet at scale: N units applied to two nodes through etcd (`sandboxctl fleet apply
--all`) vs the same N units as local files on the same two nodes (written, then `reload`).

    sudo .venv/bin/python -m tests.bench.bench_fleet [-n 500]

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
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import kit
from tests.support.etcd_cluster import EtcdCluster
from tests.support.waiting import wait_for

PREFIX = "/sandboxd/v1"
UNIT = '[service]\nexec = ["/bin/sleep", "100000"]\nstop_timeout = "300ms"\n'
TIMEOUT = 900.0


def all_running(daemon: Any, n: int) -> bool:
    units = daemon.status()
    return len(units) == n and all(u["state"] == "running" for u in units.values())


def reports_running(etcd: EtcdCluster, n: int) -> bool:
    found = etcd.get_prefix(f"{PREFIX}/status/")
    return len(found) == 2 * n and all(json.loads(v)["state"] == "running" for v in found.values())


def until(condition: Callable[[], bool], began: float) -> float:
    wait_for(condition, TIMEOUT, interval=0.2)
    return time.perf_counter() - began


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
    args = parser.parse_args(argv)
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
