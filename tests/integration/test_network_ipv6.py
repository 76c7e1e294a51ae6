"""IPv6 on the bridge (daemon `subnet6`), through the real launch path: a bridge sandbox gets
its leased IPv6 address and a default route via the bridge, reaches the bridge's IPv6 address
from that address, and its port drops IPv6 from any other source (antispoof.py)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_network_bridge import Env, bridge_env, port_chain
from test_network_launch import PYTHON, _subreaper, stack, start

from supervisor.linux import heldnetns
from supervisor.sandbox.host.ipam import link_local_for, mac_for
from supervisor.sandbox.host.network import NetworkManager
from tests.support import harness
from tests.support.waiting import wait_for

__all__ = ["_subreaper", "stack"]  # fixtures, imported for pytest
pytestmark = harness.LAUNCH_MARKS

# Accepts TCP connections on [address]:port and answers each with the peer's address, as the
# host saw it. Prints "ready" once listening.
ECHO_PEER = r"""
import socket, sys
srv = socket.socket(socket.AF_INET6)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen()
print("ready", flush=True)
while True:
    conn, peer = srv.accept()
    conn.sendall(peer[0].encode()); conn.close()
    print(peer[0], flush=True)
"""

# Inside the sandbox: its eth0 IPv6 addresses and default route, and what the host saw of a
# connection from its own address. Then, with NET_ADMIN, it adds a neighbour's address to its
# eth0 and sends a SYN from that (non-blocking: the SYN leaves during connect()).
CLIENT = r"""
import json, socket, subprocess, sys
gateway, port, forged = sys.argv[1], int(sys.argv[2]), sys.argv[3]
addrs = [l.split() for l in open("/proc/net/if_inet6")]
routes = [l.split() for l in open("/proc/net/ipv6_route")]
out = {
    "eth0": sorted(a[0] for a in addrs if a[5] == "eth0"),
    "default_via": [r[4] for r in routes if r[0] == "0" * 32 and r[1] == "00" and r[9] == "eth0"],
}
with socket.create_connection((gateway, port), timeout=10) as c:
    out["seen"] = c.recv(100).decode()
subprocess.run(["/usr/sbin/ip", "-6", "addr", "add", forged + "/64", "dev", "eth0", "nodad"],
               check=True)
s = socket.socket(socket.AF_INET6)
s.bind((forged, 0)); s.setblocking(False)
out["forged"] = s.connect_ex((gateway, port))
print(json.dumps(out), flush=True)
"""


def hex6(ip: str) -> str:
    return ipaddress.IPv6Address(ip).exploded.replace(":", "")


@pytest.fixture
def env6(tmp_path: Path) -> Iterator[Env]:
    with bridge_env(tmp_path, ipv6=True) as made:
        yield made


@contextlib.contextmanager
def echo_peer(address: str, port: int) -> Iterator[list[str]]:
    """The server runs while the block does; the list gets the peers it saw, at the end."""
    proc = subprocess.Popen(
        [PYTHON, "-c", ECHO_PEER, address, str(port)], stdout=subprocess.PIPE, text=True
    )
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        yield seen
    finally:
        proc.kill()  # ours, by PID
        out, _ = proc.communicate()
        seen += out.split()


def test_a_bridge_sandbox_gets_its_ipv6_address_and_reaches_the_bridge(
    env6: Env, stack: contextlib.ExitStack
) -> None:
    net = env6.net
    assert net.subnet6 is not None and net.gateway6 is not None
    asyncio.run(net.ensure_bridge())
    gateway6 = str(net.gateway6)
    pinned = str(net.subnet6.network_address + 0x42)
    forged = str(net.subnet6.network_address + 0x99)
    with echo_peer(gateway6, 8086) as seen:
        spec = harness.unit(
            [PYTHON, "-c", CLIENT, gateway6, "8086", forged],
            name="six",
            network={"mode": "bridge", "address6": f"{pinned}/64"},
            security={"capabilities": ["NET_ADMIN"]},  # so it can add the forged address
        )
        got = json.loads(start(env6, stack, spec).output())
        assert got["forged"] == errno.EINPROGRESS  # the SYN from the forged address is out
        chain = port_chain(net.bridge, net.veth_for("six"))
        assert f"ip6 saddr != {{ {pinned}, fe80::" in chain
        # The port's source check drops it (its counter moves: the kernel's own probes from
        # the unspecified source `::` are dropped by an earlier rule); the host never sees it.
        wait_for(lambda: spoof_drops(net.bridge, net.veth_for("six")) > 0, timeout=20)
    assert seen == [pinned]
    ip4 = net.leases.get("six")
    assert ip4 is not None
    # The link-local address the rules allow is the one the kernel gave eth0.
    link_local = hex6(str(link_local_for(mac_for(ip4))))
    assert sorted(got["eth0"]) == sorted([hex6(pinned), link_local])
    assert got["default_via"] == [hex6(gateway6)]
    assert got["seen"] == pinned  # from its own address, seen as such by the host
    assert net.leases6 is not None and str(net.leases6.get("six")) == pinned


def spoof_drops(bridge: str, veth: str | None, rule: str = "ip6 saddr !=") -> int:
    """Packets the port's rule containing `rule` dropped (default: IPv6 from a foreign
    source)."""
    lines = port_chain(bridge, veth).splitlines()
    line = next(line for line in lines if rule in line and "drop" in line)
    match = re.search(r"counter packets (\d+)", line)
    assert match, line
    return int(match.group(1))


# With NET_RAW, from its own address (which passes the source check): a router
# advertisement to all nodes (it would make the sandbox the host's and neighbours' IPv6
# router) and a neighbour advertisement claiming the bridge's address (it would move the
# gateway's traffic to the sandbox). The kernel fills in the ICMPv6 checksum.
FORGE_ND = r"""
import socket, struct, sys
gateway = socket.inet_pton(socket.AF_INET6, sys.argv[1])
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
index = socket.if_nametoindex("eth0")
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
na = struct.pack("!BBHI", 136, 0, 0, 0xA0000000) + gateway
for packet in (ra, na):
    s.sendto(packet, ("ff02::1", 0, 0, index))
print("sent", flush=True)
"""


def test_router_and_neighbour_advertisements_for_others_are_dropped(
    env6: Env, stack: contextlib.ExitStack
) -> None:
    net = env6.net
    assert net.gateway6 is not None
    spec = harness.unit(
        [PYTHON, "-c", FORGE_ND, str(net.gateway6)],
        name="forger",
        network={"mode": "bridge"},
        security={"capabilities": ["NET_RAW"]},
    )
    assert start(env6, stack, spec).output() == "sent\n"
    veth = net.veth_for("forger")
    wait_for(lambda: spoof_drops(net.bridge, veth, "nd-router-advert") >= 1, timeout=20)
    wait_for(lambda: spoof_drops(net.bridge, veth, "nd-neighbor-advert counter") >= 1, timeout=20)


def test_a_held_netns_reattached_by_a_daemon_that_now_has_subnet6_gets_its_ipv6_address(
    env6: Env, tmp_path: Path
) -> None:
    """A held netns (tcp [[listen]] outside the host's network) keeps eth0 across runs; a run
    of a daemon restarted with a `subnet6` it lacked must not keep the IPv4-only eth0."""
    net6 = env6.net
    without6 = env6.config.model_copy(
        update={"network": env6.config.network.model_copy(update={"subnet6": None})}
    )
    net4 = NetworkManager(without6)  # the same bridge, subnet and lease file
    assert net4.subnet6 is None and net6.subnet6 is not None
    bridge = harness.unit(["/bin/true"], name="held6", network={"mode": "bridge"}).unit.network
    path = heldnetns.path_for(str(tmp_path / "netns"), "held6")
    heldnetns.create(path)
    sleeper = subprocess.Popen(["nsenter", f"--net={path}", "sleep", "600"])
    try:
        wait_for(lambda: os.stat(f"/proc/{sleeper.pid}/ns/net").st_ino == heldnetns.inode(path), 30)
        asyncio.run(net6.ensure_bridge())
        plan4 = asyncio.run(net4.prepare("held6", bridge))
        asyncio.run(net4.attach(plan4, sleeper.pid, held=True))
        assert eth0_addresses(path, "-6", "global") == []
        plan6 = asyncio.run(net6.prepare("held6", bridge))
        assert plan6.address == plan4.address and plan6.address6 is not None
        asyncio.run(net6.attach(plan6, sleeper.pid, held=True))
        assert eth0_addresses(path, "-6", "global") == [str(plan6.address6)]
        assert eth0_addresses(path, "-4", "global") == [str(plan6.address)]
    finally:
        sleeper.kill()  # ours, by PID
        sleeper.wait()
        asyncio.run(net6.detach("held6"))
        net6.release("held6")
        heldnetns.drop(path)


def eth0_addresses(netns_path: str, family: str, scope: str) -> list[str]:
    out = subprocess.run(
        ["nsenter", f"--net={netns_path}", "ip", "-j", family, "addr", "show", "dev", "eth0"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return [
        f"{a['local']}/{a['prefixlen']}"
        for link in json.loads(out)
        for a in link.get("addr_info", [])
        if a.get("scope") == scope
    ]
