"""Issue 21: published ports give a sandbox no new way in (nat.py's guard, nattable.py's
ownership, unit/checks.py's conflicts).

- `route_localnet`, which the host's own `curl 127.0.0.1:PORT` needs on the bridge, would let a
  sandbox send to 127.0.0.1 *through* the bridge and reach the host's loopback-only services.
  A unit granted NET_RAW writes exactly such datagrams (its own MAC and address, so the
  anti-spoofing rules pass them) to a UDP socket of the test on 127.0.0.1; the guard rule's
  counter proves each was dropped, and a marker datagram to the bridge address proves that the
  same frames are otherwise delivered.
- A neighbour cannot take over a published port: a unit publishing a port another unit has is
  refused at reload naming it, whichever name sorts first; the owner keeps serving.
- No user text reaches nft as syntax: tests/unit/sandbox/test_nat.py (the commands are JSON
  data) and tests/unit/unit/test_unit_ports.py (addresses are parsed, never copied).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from supervisor.sandbox.host import nat
from supervisor.sandbox.host.ipam import mac_for
from supervisor.unit.schema import DEFAULT_CAPABILITIES
from tests.support.bridges import free_prefix, remove_bridge
from tests.support.kit import cgroup_version, daemon_factory, uname
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]
PY = "/usr/bin/python3"
_serial = count()

# Raw UDP datagrams to 127.0.0.1 (and one marker to the bridge address) from the sandbox's own
# MAC and IPv4 address, to the gateway's MAC: what a hostile root with NET_RAW can send.
SENDER = r"""
import socket, struct, sys
gw_mac, gw_ip, own_ip, lo_port, marker_port = sys.argv[1:6]
mac = open("/sys/class/net/eth0/address").read().strip()
def checksum(header):
    total = sum(struct.unpack("!10H", header))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
def frame(dst, port, payload):
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0,
                     socket.inet_aton(own_ip), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    eth = bytes.fromhex(gw_mac.replace(":", "")) + bytes.fromhex(mac.replace(":", ""))
    return eth + b"\x08\x00" + ip + udp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for _ in range(3):
    s.send(frame("127.0.0.1", int(lo_port), b"steal"))
s.send(frame(gw_ip, int(marker_port), b"marker"))
print("sent")
"""


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@dataclass
class Lab:
    daemon: Any
    bridge: str
    prefix: str

    def name(self, stem: str) -> str:
        """The unit's name, unique on the host (kit.host_leaks looks at host-wide aliases)."""
        return str(uname(self.daemon, stem))

    def write(self, stem: str, exec_argv: list[str], network: str, extra: str = "") -> None:
        text = (
            f'[service]\nexec = {json.dumps(exec_argv)}\nstop_timeout = "2s"\n'
            f'[restart]\npolicy = "no"\n[network]\nmode = "bridge"\n{network}\n{extra}'
        )
        self.daemon.write_unit(self.name(stem), text)

    def reload(self) -> dict[str, Any]:
        code, body = self.daemon.request("POST", "/v1/reload")
        assert code == 200, body
        return dict(body)


@pytest.fixture
def lab() -> Iterator[Lab]:
    bridge = f"sbxt{os.getpid() % 1000}p{next(_serial)}"
    prefix = free_prefix(salt=7)
    try:
        with daemon_factory("ports") as make:
            daemon = make()
            daemon.config.write_text(f'[network]\nbridge = "{bridge}"\nsubnet = "{prefix}0/24"\n')
            yield Lab(daemon, bridge, prefix)
            if daemon.proc is not None and daemon.proc.poll() is None:
                assert daemon.stop() == 0
            gone = subprocess.run(["nft", "list", "table", "ip", nat.table_name(bridge)],
                                  capture_output=True, check=False)  # fmt: skip
            assert gone.returncode != 0, "the NAT table outlived the daemon's units"
    finally:
        remove_bridge(bridge)


def guard_drops(bridge: str) -> int:
    listed = json.loads(sh("nft", "-j", "list", "chain", "ip", nat.table_name(bridge), "guard"))
    for item in listed["nftables"]:
        for statement in item.get("rule", {}).get("expr", []):
            if "counter" in statement:
                return int(statement["counter"]["packets"])
    raise AssertionError("no counter in the guard chain")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def test_a_sandbox_cannot_reach_host_loopback_through_route_localnet(lab: Lab) -> None:
    d = lab.daemon
    gateway = f"{lab.prefix}1"
    sender_ip = f"{lab.prefix}30"
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as loopback_only,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as marker,
    ):
        loopback_only.bind(("127.0.0.1", 0))
        loopback_only.setblocking(False)
        # The published port puts route_localnet on: the guard is what stands in the way.
        lab.write("web", [PY, "-m", "http.server", "8080"], f'ports = ["{free_port()}:8080"]')
        d.start()
        d.wait_unit(lab.name("web"), lambda u: u["state"] == "running", 120)
        localnet = Path(f"/proc/sys/net/ipv4/conf/{lab.bridge}/route_localnet").read_text()
        assert localnet.strip() == "1"
        marker.bind((gateway, 0))
        marker.settimeout(120)
        argv = [PY, "-c", SENDER, mac_for(ipaddress.IPv4Address(gateway)), gateway, sender_ip,
                str(loopback_only.getsockname()[1]), str(marker.getsockname()[1])]  # fmt: skip
        caps = json.dumps([*DEFAULT_CAPABILITIES, "NET_RAW"])
        lab.write(
            "sender", argv, f'address = "{sender_ip}/24"', f"[security]\ncapabilities = {caps}\n"
        )
        assert lab.reload()["started"] == [lab.name("sender")]
        assert marker.recv(100) == b"marker"  # the crafted frames do reach the host
        wait_for(lambda: guard_drops(lab.bridge) >= 3, 60, lambda: str(guard_drops(lab.bridge)))
        with pytest.raises(BlockingIOError):
            loopback_only.recv(100)  # all three were dropped before routing
        sender = lab.name("sender")
        done = d.wait_unit(sender, lambda u: u["state"] in ("exited", "failed"), 60)
        assert done["last_exit"] == "exit-code:0", d.output(sender)


def test_a_neighbour_cannot_take_a_published_port(lab: Lab) -> None:
    d = lab.daemon
    port = free_port()
    lab.write("web", [PY, "-m", "http.server", "8080", "-d", "/etc"], f'ports = ["{port}:8080"]')
    d.start()
    web = lab.name("web")
    d.wait_unit(web, lambda u: u["state"] == "running", 120)

    def served() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=5) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_for(served, 60)
    sleeper = ["/bin/sleep", "1000"]
    # A later name: refused by the reload, naming the owner.
    lab.write("zz-thief", sleeper, f'ports = ["0.0.0.0:{port}:9999"]')
    # An earlier name: its file wins the name-order check, so web's file is refused instead;
    # but web runs on with the port, and the thief's start fails naming web.
    lab.write("aa-thief", sleeper, f'ports = ["127.0.0.1:{port}:9999"]')
    result = lab.reload()
    early, late = lab.name("aa-thief"), lab.name("zz-thief")
    assert f'of unit "{early}"' in " ".join(result["invalid"][late])  # first in name order
    assert f'of unit "{early}"' in " ".join(result["invalid"][web])
    thief = d.wait_unit(early, lambda u: u["state"] == "failed", 60)
    assert str(thief["last_exit"]).startswith("launch-error:network: "), thief
    assert f'conflicts with {port}:8080/tcp of unit "{web}"' in str(thief["last_exit"])
    assert late not in d.status() or d.status()[late]["state"] != "running"
    assert d.unit(web)["state"] == "running" and served()
