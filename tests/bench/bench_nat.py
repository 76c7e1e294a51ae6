"""Benchmark published ports and the NAT table (as root): prints medians.

Everything runs in a private network namespace of this process (its own ip_forward, bridge and
nftables, nothing on the host changes), with a "sandbox" netns on a veth to a bridge:

- install: `NatTable.add` (one nft transaction, as the daemon runs it) for units 1..N, each with
  outbound NAT and one published port; the median time of the first and last tenth shows that a
  unit's install does not grow with the units already in the table (O(1));
- latency: TCP connect + 64-byte request/response, host -> sandbox address directly vs host ->
  127.0.0.1:published port (output-hook DNAT, masquerade to the bridge address);
- throughput: 256 MiB over one TCP connection on both paths.

Each path is measured twice, interleaved; the second round is the one to read.

    .venv/bin/python tests/bench/bench_nat.py [--units 200] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ipaddress
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from supervisor.sandbox.host.nat import UnitNat
from supervisor.sandbox.host.nattable import NatTable
from supervisor.unit.ports import parse_published_port
from tests.support.ipnetns import run_netns_mounted, unmount_run_netns

CLONE_NEWNET = 0x40000000
BRIDGE, SUBNET, NS = "sbxbench", "10.201.0.0/16", "sbxbenchsbx"
SANDBOX_IP, PORT, PUBLISHED = "10.201.255.2", 7000, 17000

SERVER = r"""
import socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(512)
def serve(conn):
    with conn:
        while True:
            data = conn.recv(1 << 16)
            if not data:
                return
            if data.startswith(b"ping"):
                conn.sendall(data)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def private_netns() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise SystemExit("cannot unshare a netns (root needed)")
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", "10.201.0.1/16", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")


def bench_install(units: int) -> list[float]:
    async def run() -> list[float]:
        with tempfile.TemporaryDirectory() as tmp:
            table = NatTable(BRIDGE, SUBNET, Path(tmp))
            times = []
            for n in range(units):
                ip = ipaddress.IPv4Address("10.201.1.0") + n
                port = parse_published_port(f"{20000 + n}:80")
                entry = UnitNat(f"unit{n}", f"sbxbench{n:07x}", ip, True, (port,))
                start = time.perf_counter()
                await table.add(entry)
                times.append(time.perf_counter() - start)
            await table.drop()
            return times

    return asyncio.run(run())


def sandbox() -> subprocess.Popen[bytes]:
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", "sbxbenchh", "type", "veth", "peer", "name", "eth0", "netns", NS)
    sh("ip", "link", "set", "sbxbenchh", "master", BRIDGE, "up")
    for argv in (
        ["ip", "addr", "add", f"{SANDBOX_IP}/16", "dev", "eth0"],
        ["ip", "link", "set", "eth0", "up"],
        ["ip", "link", "set", "lo", "up"],
        ["ip", "route", "add", "default", "via", "10.201.0.1"],
    ):
        sh("ip", "netns", "exec", NS, *argv)
    server = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c", SERVER, str(PORT)])
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((SANDBOX_IP, PORT), timeout=1).close()
            return server
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def latency(address: tuple[str, int], n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        with socket.create_connection(address, timeout=5) as s:
            s.sendall(b"ping" + b"x" * 60)
            got = b""
            while len(got) < 64:
                got += s.recv(64)
        times.append(time.perf_counter() - start)
    return times


def throughput(address: tuple[str, int], size: int = 256 << 20) -> float:
    chunk = b"\0" * (1 << 20)
    with socket.create_connection(address, timeout=30) as s:
        start = time.perf_counter()
        for _ in range(size // len(chunk)):
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # the server closes after reading everything
        return size / (time.perf_counter() - start) / (1 << 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=200)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    private_netns()
    times = bench_install(args.units)
    tenth = max(1, args.units // 10)
    first, last = statistics.median(times[:tenth]), statistics.median(times[-tenth:])
    print(f"install, {args.units} units: first tenth median {first * 1e3:.2f} ms/unit, "
          f"last tenth {last * 1e3:.2f} ms/unit (ratio {last / first:.2f}; O(1): ~1)")  # fmt: skip

    mounted = run_netns_mounted()
    server = sandbox()
    try:
        published = UnitNat("web", "sbxbenchweb", ipaddress.IPv4Address(SANDBOX_IP), True,
                            (parse_published_port(f"{PUBLISHED}:{PORT}"),))  # fmt: skip

        async def publish(state: str) -> None:
            await NatTable(BRIDGE, SUBNET, Path(state)).add(published)

        with tempfile.TemporaryDirectory() as state:
            asyncio.run(publish(state))
        paths = {"direct": (SANDBOX_IP, PORT), "published": ("127.0.0.1", PUBLISHED)}
        # Two rounds, interleaved: the first warms the server and the caches up.
        for name, address in [*paths.items(), *paths.items()]:
            lat = latency(address, args.requests)
            mib = throughput(address)
            print(f"{name:9}: connect+request median {statistics.median(lat) * 1e6:.0f} us, "
                  f"p99 {sorted(lat)[int(len(lat) * 0.99)] * 1e6:.0f} us; "
                  f"throughput {mib:.0f} MiB/s")  # fmt: skip
    finally:
        server.kill()  # ours, by its PID
        server.wait()
        subprocess.run(["ip", "netns", "del", NS], check=False)
        unmount_run_netns(mounted)


if __name__ == "__main__":
    main()
