"""Benchmark what `network.mode = "bridge"` adds to a launch (as root): prints medians.

Per iteration a child unshares its netns and waits (the state the launcher leaves PID 1 in),
then, on one asyncio loop as in the daemon:

- prepare: lease lookup/allocation + bridge check (the bridge exists after the first run);
- attach:  veth pair with the peer born in the netns as eth0, host end onto the bridge and
           up, then inside: address, link up, default route;
- detach:  delete the host veth after the child exited.

Mode "none" costs none of these (PID 1 raises lo itself), so prepare + attach is the whole
launch-time cost of bridge mode; detach is paid at stop. Uses its own bridge and subnet
(sbxbench<n>, 10.201.254.0/24) and removes them afterwards.

    .venv/bin/python tests/bench/bench_network.py [-n 200]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import statistics
import subprocess
import tempfile
import threading
import time

from supervisor.config import DaemonConfig
from supervisor.sandbox.host.network import NetworkManager
from supervisor.unit.schema import Network

CLONE_NEWNET = 0x40000000
BRIDGE = Network(mode="bridge")


def spawn_netns() -> tuple[int, int]:
    """A child in a fresh netns, blocked until the returned fd is closed: (pid, fd)."""
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(go_w)
            if libc.unshare(CLONE_NEWNET) != 0:
                os._exit(1)
            os.write(ready_w, b"r")
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    if os.read(ready_r, 1) != b"r":
        raise SystemExit("cannot unshare a netns (root needed)")
    os.close(ready_r)
    return pid, go_w


async def run(net: NetworkManager, n: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {
        "prepare": [],
        "attach": [],
        "prepare+attach": [],
        "detach": [],
    }
    await net.prepare("warmup", BRIDGE)  # creates the bridge once, like a daemon's first unit
    for i in range(n):
        unit = f"bench-{i % 20}"  # 20 units restarting: leases are reused, as in steady state
        pid, go = spawn_netns()
        try:
            t0 = time.perf_counter()
            plan = await net.prepare(unit, BRIDGE)
            t1 = time.perf_counter()
            await net.attach(plan, pid)
            t2 = time.perf_counter()
        finally:
            os.close(go)
            os.waitpid(pid, 0)
        t3 = time.perf_counter()
        await net.detach(unit)
        t4 = time.perf_counter()
        times["prepare"].append(t1 - t0)
        times["attach"].append(t2 - t1)
        times["prepare+attach"].append(t2 - t0)
        times["detach"].append(t4 - t3)
    assert threading.active_count() == 1, "netlink left a thread behind"
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="iterations (default 200)")
    args = parser.parse_args()
    bridge = f"sbxbench{os.getpid() % 1000}"
    with tempfile.TemporaryDirectory() as data:
        config = DaemonConfig.model_validate(
            {"data_dir": data, "network": {"bridge": bridge, "subnet": "10.201.254.0/24"}}
        )
        net = NetworkManager(config)
        try:
            times = asyncio.run(run(net, args.n))
        finally:
            leases = len(net.leases.leases())
            asyncio.run(net.cleanup_orphans(running=set()))
            asyncio.run(net.remove_bridge())
    print(f"bridge mode, {args.n} launches on {bridge} ({leases} leases), milliseconds:")
    print(f"  {'step':<16}{'median':>8}{'p90':>8}{'max':>8}")
    for step, values in times.items():
        ms = sorted(v * 1000 for v in values)
        p90 = ms[int(len(ms) * 0.9) - 1] if len(ms) >= 10 else ms[-1]
        print(f"  {step:<16}{statistics.median(ms):>8.2f}{p90:>8.2f}{ms[-1]:>8.2f}")
    left = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    if bridge in left:
        raise SystemExit(f"links of {bridge} left behind")
    print(f"  (threads after: {threading.active_count()}; no link of {bridge} left)")


if __name__ == "__main__":
    main()
