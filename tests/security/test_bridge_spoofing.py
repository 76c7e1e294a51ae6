"""Issue 18: a bridge sandbox cannot spoof its neighbours or the host (antispoof.py's rules).

One daemon on its own bridge ("sbxt<pid>a<n>", a free /24 of 10.201.0.0/16) runs three units
with static addresses: `victim` (default capabilities), `attacker` (granted NET_RAW: it writes
raw frames) and `admin` (granted NET_ADMIN: it cannot write frames but can give its eth0 any
address, and then the kernel speaks for it). Each runs PROBE below, which takes commands from
this test over a Unix socket in a bind-mounted directory (never over the network under test),
keeps a UDP echo and recorder on port 7000 and sends what it is told to.

How absence is proven without a clock: after its forged frames the attacker sends a legitimate
marker datagram on the same path (raw socket, the probe pinned to one CPU, so its frames are
queued and processed in order), and the test waits for the marker; whatever the forged frames
would have done (an ARP update, a datagram) happened before the marker arrived. Seen from the
host: its neighbour table, the bridge's FDB, a UDP socket on the gateway address and a packet
tap on the bridge (every frame the bridge passed up to the host, drops counted); from the
victim: its neighbour table (read through nsenter) and its recorder.

Every attack test first puts the state the attack would change in place (the host's neighbour
entry: gratuitous ARP only updates an existing one), so without the rules each one fails.
Checked so: with `_filter` in network.py disabled, every test in the "attacks" section fails
(the rules are what stops them); the legitimate-traffic test passes either way.

The module's daemon is shared by its tests (one start, a few seconds each test); the fixture
checks at the end that no veth, netns, or rules of the bridge are left.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import select
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from supervisor.sandbox.host.antispoof import table_name
from supervisor.sandbox.host.ipam import mac_for
from supervisor.sandbox.host.network import veth_name
from supervisor.unit.schema import DEFAULT_CAPABILITIES
from tests.support.bridges import free_prefix, remove_bridge
from tests.support.kit import cgroup_version, daemon_factory, uname

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]

PY = "/usr/bin/python3"
PORT = 7000  # each probe's UDP echo and recorder
TIMEOUT = 30.0  # for one marker or one round trip on a loaded 2-core runner
START_TIMEOUT = 120.0
ETH_P_ALL, ETH_P_IP, ETH_P_ARP, ETH_P_IPV6, ETH_P_8021Q = 0x0003, 0x0800, 0x0806, 0x86DD, 0x8100
BROADCAST = "ff:ff:ff:ff:ff:ff"
FORGED_MAC = "02:de:ad:be:ef:01"  # no interface has it
_serial = count()

# Runs inside each sandbox (the host's /usr is there, read-only). Commands are JSON lines on
# the control socket, answered by one JSON line each.
PROBE = r"""
import json, os, select, signal, socket, subprocess, sys, time

ctl_path, own_ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 ignores it otherwise
# One CPU: every frame this process (or an `ip` it runs) sends is queued on that CPU's backlog
# and processed in order, so a marker sent last arrives last.
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((own_ip, port))
received = []  # [source ip, payload] of datagrams that were not echo requests, in order
ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ctl.connect(ctl_path)


def on_udp():
    data, (src, sport) = udp.recvfrom(65535)
    if data.startswith(b"echo:"):
        udp.sendto(data, (src, sport))
    else:
        received.append([src, data.decode("ascii", "replace")])


def collect(marker, timeout):
    deadline = time.monotonic() + timeout
    while not any(payload == marker for _, payload in received):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([udp], [], [], left)[0]:
            raise TimeoutError(f"no marker {marker}; received {received}")
        on_udp()
    end = [payload for _, payload in received].index(marker) + 1
    got = received[:end]
    del received[:end]
    return {"received": got}


def roundtrip(ip, payload, timeout):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((own_ip, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.sendto(b"echo:" + payload.encode(), (ip, port))
            if select.select([s], [], [], 0.5)[0] and s.recv(65535) == b"echo:" + payload.encode():
                return {}
        raise TimeoutError(f"no echo from {ip}")


def send(frames):
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as s:
        s.bind(("eth0", 0))
        for frame in frames:
            s.send(bytes.fromhex(frame))
    return {}


def can_raw():
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        return {"errno": 0}
    except OSError as err:
        return {"errno": err.errno}


def script(steps):
    for step in steps:
        if step[0] == "run":
            done = subprocess.run(step[1], capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{step[1]}: {done.stderr}")
        else:  # ["udp", source address, destination address, destination port, payload]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((step[1], 0))
                s.sendto(step[4].encode(), (step[2], step[3]))
    return {}


COMMANDS = {"collect": collect, "roundtrip": roundtrip, "send": send, "can_raw": can_raw,
            "script": script}
pending = b""
while True:
    for ready in select.select([ctl, udp], [], [])[0]:
        if ready is udp:
            on_udp()
            continue
        chunk = ctl.recv(1 << 20)
        if not chunk:
            sys.exit(0)
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            try:
                answer = {"ok": True, **COMMANDS[request.pop("cmd")](**request)}
            except Exception as err:
                answer = {"ok": False, "error": f"{type(err).__name__}: {err}"}
            ctl.sendall(json.dumps(answer).encode() + b"\n")
"""


# -- frames ----------------------------------------------------------------------------------


def _mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _ip(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


def ether(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    return _mac(dst) + _mac(src) + struct.pack("!H", ethertype) + payload


def vlan(tci: int, ethertype: int, payload: bytes) -> bytes:
    """An 802.1Q tag's remainder after ether type 0x8100: TCI, inner ether type, payload."""
    return struct.pack("!HH", tci, ethertype) + payload


def arp(op: int, sha: str, spa: str, tha: str, tpa: str) -> bytes:
    """Ethernet/IPv4 ARP; op 1 request, 2 reply."""
    return (
        struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, op) + _mac(sha) + _ip(spa) + _mac(tha) + _ip(tpa)
    )


def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp4(src: str, dst: str, dport: int, payload: bytes) -> bytes:
    """IPv4 + UDP (no UDP checksum, which IPv4 allows)."""
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                       _ip(src), _ip(dst))  # fmt: skip
    return head[:10] + struct.pack("!H", _checksum(head)) + head[12:] + udp


def udp6(src: str, dst: str, dport: int, payload: bytes) -> bytes:
    """IPv6 + UDP (the checksum is mandatory over IPv6)."""
    length = 8 + len(payload)
    pseudo = _ip(src) + _ip(dst) + struct.pack("!I3xB", length, 17)
    udp = struct.pack("!HHHH", 40000, dport, length, 0) + payload
    udp = udp[:6] + struct.pack("!H", _checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    return struct.pack("!IHBB", 6 << 28, length, 17, 255) + _ip(src) + _ip(dst) + udp


# -- the lab ---------------------------------------------------------------------------------


@dataclass
class Unit:
    name: str
    ip: str
    mac: str
    veth: str
    peer: Any = None  # Peer, once its probe has connected
    pid: int = 0


class Peer:
    """The test's end of one probe's control socket."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.file = conn.makefile("rwb")

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        self.conn.settimeout(TIMEOUT + 30)
        self.file.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        self.file.flush()
        answer: dict[str, Any] = json.loads(self.file.readline())
        assert answer.pop("ok"), f"{cmd}: {answer['error']}"
        return answer

    def close(self) -> None:
        self.file.close()
        self.conn.close()


@dataclass
class Seen:
    """What arrived up to a marker: datagrams at the host and at the victim, host tap frames."""

    host: list[tuple[str, bytes]] = field(default_factory=list)
    tap: list[bytes] = field(default_factory=list)
    victim: list[list[str]] = field(default_factory=list)

    def carrying(self, token: bytes) -> list[object]:
        """Everything that carries `token` in its payload, wherever it arrived."""
        found: list[object] = [d for d in self.host if token in d[1]]
        found += [f.hex() for f in self.tap if token in f]
        found += [d for d in self.victim if token.decode() in d[1]]
        return found


@dataclass
class Lab:
    daemon: Any
    bridge: str
    gateway: str
    gateway_mac: str
    victim: Unit
    attacker: Unit
    admin: Unit
    host_udp: socket.socket
    tap: socket.socket

    @property
    def host_port(self) -> int:
        return int(self.host_udp.getsockname()[1])

    # -- views -----------------------------------------------------------------------------

    def host_neigh(self, ip: str) -> str | None:
        """The lladdr of the host's neighbour entry for `ip` on the bridge."""
        out = sh("ip", "-j", "neigh", "show", ip, "dev", self.bridge)
        entries = json.loads(out or "[]")
        return entries[0].get("lladdr") if entries else None

    def sandbox_neigh(self, unit: Unit, ip: str) -> str | None:
        out = sh(*nsenter(unit), "ip", "-j", "neigh", "show", ip, "dev", "eth0")
        entries = json.loads(out or "[]")
        return entries[0].get("lladdr") if entries else None

    def fdb_port(self, mac: str) -> str | None:
        """The bridge port the FDB sends `mac` to (learned entries only)."""
        for entry in json.loads(sh("bridge", "-j", "fdb", "show", "br", self.bridge)):
            if entry.get("mac") == mac and entry.get("state") != "permanent":
                return str(entry.get("ifname"))
        return None

    # -- acts ------------------------------------------------------------------------------

    def host_roundtrip(self, unit: Unit) -> None:
        """An echo from the host to `unit` and back (resent until it comes)."""
        token = b"echo:" + secrets.token_hex(6).encode()
        deadline = time.monotonic() + TIMEOUT
        while True:
            self.host_udp.sendto(token, (unit.ip, PORT))
            ready = select.select([self.host_udp], [], [], 0.5)[0]
            while ready:
                if self.host_udp.recv(65535) == token:
                    return
                ready = select.select([self.host_udp], [], [], 0)[0]
            assert time.monotonic() < deadline, f"no echo from {unit.name}"

    def strike(self, frames: list[bytes], nonce: str, to_victim: bool = False) -> Seen:
        """The attacker sends `frames`, then legitimate markers to the host (and the victim);
        returns what arrived up to the markers."""
        marker = f"marker-{nonce}"
        a = self.attacker
        to_host = udp4(a.ip, self.gateway, self.host_port, marker.encode())
        frames = [*frames, ether(self.gateway_mac, a.mac, ETH_P_IP, to_host)]
        if to_victim:
            v = self.victim
            frames.append(ether(v.mac, a.mac, ETH_P_IP, udp4(a.ip, v.ip, PORT, marker.encode())))
        self.drain_tap()
        a.peer.call("send", frames=[f.hex() for f in frames])
        return self.seen(marker, to_victim)

    def seen(self, marker: str, at_victim: bool = False) -> Seen:
        seen = Seen(self.host_until(marker.encode()), self.tap_until(marker.encode()))
        if at_victim:
            seen.victim = self.victim.peer.call("collect", marker=marker, timeout=TIMEOUT)[
                "received"
            ]
        return seen

    def host_until(self, marker: bytes) -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + TIMEOUT
        while not got or got[-1][1] != marker:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self.host_udp], [], [], left)[0], (marker, got)
            data, (src, _) = self.host_udp.recvfrom(65535)
            got.append((src, data))
        return got

    def drain_tap(self) -> None:
        while select.select([self.tap], [], [], 0)[0]:
            self.tap.recv(65535)
        tap_drops(self.tap)

    def tap_until(self, marker: bytes) -> list[bytes]:
        frames: list[bytes] = []
        deadline = time.monotonic() + TIMEOUT
        while not frames or marker not in frames[-1]:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self.tap], [], [], left)[0], "marker not tapped"
            data, address = self.tap.recvfrom(65535)
            if address[2] != socket.PACKET_OUTGOING:
                frames.append(data)
        assert tap_drops(self.tap) == 0, "the tap dropped frames: it may have missed one"
        return frames

    def arp_frames(self, frames: list[bytes]) -> list[tuple[str, str]]:
        """(sender MAC, sender IP) of the ARP frames among `frames`."""
        found = []
        for f in frames:
            if f[12:14] == struct.pack("!H", ETH_P_ARP):
                found.append((f[22:28].hex(":"), str(ipaddress.IPv4Address(f[28:32]))))
        return found


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def nsenter(unit: Unit) -> list[str]:
    return ["nsenter", f"--net=/proc/{unit.pid}/ns/net", "--"]


def tap_drops(tap: socket.socket) -> int:
    """Frames the tap dropped since the last call (PACKET_STATISTICS resets on read)."""
    _, drops = struct.unpack("II", tap.getsockopt(263, 6, 8))  # SOL_PACKET, PACKET_STATISTICS
    return int(drops)


def unit_file(ctl: Path, unit: Unit, caps: list[str] | None) -> str:
    text = f"""[service]
exec = ["{PY}", "/ctl/probe.py", "/ctl/{unit.name}.sock", "{unit.ip}", "{PORT}"]
stop_timeout = "2s"
[restart]
policy = "no"
[network]
mode = "bridge"
address = "{unit.ip}/24"
[sandbox]
mounts = [{{ source = "{ctl}", target = "/ctl", read_only = false }}]
"""
    if caps is not None:
        text += f"[security]\ncapabilities = {json.dumps(caps)}\n"
    return text


@contextlib.contextmanager
def listening(path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        path.chmod(0o666)  # the sandbox's root is an unprivileged host uid (its user namespace)
        sock.listen(1)
        sock.settimeout(START_TIMEOUT)
        yield sock
    finally:
        sock.close()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    bridge = f"sbxt{os.getpid() % 1000}a{next(_serial)}"
    prefix = free_prefix()
    netns_before = sh("ip", "netns", "list")
    try:
        with daemon_factory("spoof") as make, contextlib.ExitStack() as stack:
            daemon = make()
            daemon.config.write_text(f'[network]\nbridge = "{bridge}"\nsubnet = "{prefix}0/24"\n')
            ctl = daemon.base / "ctl"
            ctl.mkdir()
            (ctl / "probe.py").write_text(PROBE)
            units = {}
            grants = {"victim": None, "attacker": ["NET_RAW"], "admin": ["NET_ADMIN"]}
            for n, (stem, extra) in enumerate(grants.items()):
                name = uname(daemon, stem)
                ip = f"{prefix}{10 * (n + 1)}"
                units[stem] = Unit(name, ip, mac_for(ipaddress.IPv4Address(ip)),
                                   veth_name(bridge, name))  # fmt: skip
                caps = None if extra is None else [*DEFAULT_CAPABILITIES, *extra]
                daemon.write_unit(name, unit_file(ctl, units[stem], caps))
            listeners = {
                stem: stack.enter_context(listening(ctl / f"{u.name}.sock"))
                for stem, u in units.items()
            }
            daemon.start()
            for stem, unit in units.items():
                state = daemon.wait_unit(unit.name, lambda u: u["state"] == "running", 120)
                unit.pid = int(state["pid"])
                unit.peer = Peer(listeners[stem].accept()[0])
                stack.callback(unit.peer.close)
            gateway = f"{prefix}1"
            host_udp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            host_udp.bind((gateway, 0))
            tap = stack.enter_context(
                socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            )
            tap.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
            tap.bind((bridge, ETH_P_ALL))
            yield Lab(
                daemon, bridge, gateway, mac_for(ipaddress.IPv4Address(gateway)),
                units["victim"], units["attacker"], units["admin"], host_udp, tap,
            )  # fmt: skip
            stack.close()  # probes see EOF and exit
            assert daemon.stop() == 0
            # Nothing runs any more: no veth of ours, and no port's rules.
            ours = sh("ip", "-o", "link", "show", "master", bridge)
            assert ours == "", f"veths left on {bridge}: {ours}"
            listed = subprocess.run(
                ["nft", "-j", "list", "table", "bridge", table_name(bridge)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            table = json.loads(listed.stdout or '{"nftables": []}')
            left = [i for i in table["nftables"] if "chain" in i or "map" in i]
            names = {i["chain"]["name"] for i in left if "chain" in i}
            elements = [e for i in left if "map" in i for e in i["map"].get("elem", [])]
            assert names <= {"prerouting"} and elements == [], f"rules left: {left}"
    finally:
        # The daemon keeps its bridge and table on exit (sandboxes may outlive it): ours go.
        remove_bridge(bridge)
    assert bridge not in sh("ip", "-o", "link")
    assert subprocess.run(["nft", "list", "table", "bridge", table_name(bridge)],
                          capture_output=True, check=False).returncode != 0  # fmt: skip
    assert sh("ip", "netns", "list") == netns_before


@pytest.fixture
def ready(lab: Lab) -> Lab:
    """Known state before an attack: every unit reachable from the host, the host's and the
    victim's neighbour entries in place with the right MACs (gratuitous ARP updates only an
    existing entry: without one an attack would prove nothing), the victim's MAC learned on
    its port."""
    for unit in (lab.victim, lab.attacker, lab.admin):
        sh("ip", "neigh", "replace", unit.ip, "lladdr", unit.mac, "dev", lab.bridge,
           "nud", "reachable")  # fmt: skip
        lab.host_roundtrip(unit)
        assert lab.host_neigh(unit.ip) == unit.mac
    sh(*nsenter(lab.victim), "ip", "neigh", "replace", lab.gateway, "lladdr", lab.gateway_mac,
       "dev", "eth0", "nud", "reachable")  # fmt: skip
    assert lab.fdb_port(lab.victim.mac) == lab.victim.veth
    return lab


# -- legitimate traffic ----------------------------------------------------------------------


def test_legitimate_traffic_flows_and_only_the_granted_unit_has_raw_sockets(ready: Lab) -> None:
    lab = ready
    for a, b in ((lab.attacker, lab.victim), (lab.victim, lab.attacker), (lab.admin, lab.victim)):
        a.peer.call("roundtrip", ip=b.ip, payload=secrets.token_hex(6), timeout=TIMEOUT)
    # Legitimate raw frames from the attacker pass too: the rules judge sources, not sockets.
    nonce = secrets.token_hex(6)
    seen = lab.strike([], nonce, to_victim=True)
    assert seen.host[-1] == (lab.attacker.ip, f"marker-{nonce}".encode())
    assert seen.victim[-1] == [lab.attacker.ip, f"marker-{nonce}"]
    # NET_RAW is what the attacker was granted; a default unit has no packet socket at all.
    assert lab.attacker.peer.call("can_raw") == {"errno": 0}
    assert lab.victim.peer.call("can_raw") == {"errno": 1}  # EPERM


# -- attacks ---------------------------------------------------------------------------------


def test_gratuitous_arp_claiming_the_victims_address_does_not_move_the_hosts_entry(
    ready: Lab,
) -> None:
    lab, a, v = ready, ready.attacker, ready.victim
    nonce = secrets.token_hex(6)
    seen = lab.strike(
        [
            ether(BROADCAST, a.mac, ETH_P_ARP, arp(1, a.mac, v.ip, "00:00:00:00:00:00", v.ip)),
            ether(BROADCAST, a.mac, ETH_P_ARP, arp(2, a.mac, v.ip, a.mac, v.ip)),
        ],
        nonce,
    )
    assert lab.host_neigh(v.ip) == v.mac
    assert (a.mac, v.ip) not in lab.arp_frames(seen.tap)
    lab.host_roundtrip(v)


def test_gratuitous_arp_claiming_the_gateway_does_not_move_the_victims_entry(ready: Lab) -> None:
    lab, a = ready, ready.attacker
    nonce = secrets.token_hex(6)
    garp = arp(1, a.mac, lab.gateway, "00:00:00:00:00:00", lab.gateway)
    seen = lab.strike([ether(BROADCAST, a.mac, ETH_P_ARP, garp)], nonce, to_victim=True)
    assert lab.sandbox_neigh(lab.victim, lab.gateway) == lab.gateway_mac
    assert (a.mac, lab.gateway) not in lab.arp_frames(seen.tap)


def test_arp_with_a_forged_sender_mac_is_dropped(ready: Lab) -> None:
    # The attacker's own address, but another MAC as ARP sender (the Ethernet source is its
    # own): without the rules the host's entry for the attacker points at a MAC nobody has.
    lab, a = ready, ready.attacker
    nonce = secrets.token_hex(6)
    forged = arp(1, FORGED_MAC, a.ip, "00:00:00:00:00:00", a.ip)
    seen = lab.strike([ether(BROADCAST, a.mac, ETH_P_ARP, forged)], nonce)
    assert lab.host_neigh(a.ip) == a.mac
    assert (FORGED_MAC, a.ip) not in lab.arp_frames(seen.tap)


def test_arp_in_a_vlan_0_tag_is_dropped(ready: Lab) -> None:
    # The host strips a priority tag (VLAN 0) and processes the ARP inside: a filter that
    # looked only at untagged ARP would let this one through.
    lab, a, v = ready, ready.attacker, ready.victim
    nonce = secrets.token_hex(6)
    garp = arp(1, a.mac, v.ip, "00:00:00:00:00:00", v.ip)
    seen = lab.strike([ether(BROADCAST, a.mac, ETH_P_8021Q, vlan(0, ETH_P_ARP, garp))], nonce)
    assert lab.host_neigh(v.ip) == v.mac
    assert (a.mac, v.ip) not in lab.arp_frames(seen.tap)


def test_ip_with_the_victims_source_does_not_reach_the_host(ready: Lab) -> None:
    lab, a, v = ready, ready.attacker, ready.victim
    nonce = secrets.token_hex(6)
    forged = udp4(v.ip, lab.gateway, lab.host_port, f"forged-{nonce}".encode())
    seen = lab.strike([ether(lab.gateway_mac, a.mac, ETH_P_IP, forged)], nonce)
    assert seen.carrying(f"forged-{nonce}".encode()) == []


def test_ip_with_the_hosts_source_does_not_reach_the_victim(ready: Lab) -> None:
    lab, a, v = ready, ready.attacker, ready.victim
    nonce = secrets.token_hex(6)
    forged = udp4(lab.gateway, v.ip, PORT, f"forged-{nonce}".encode())
    seen = lab.strike([ether(v.mac, a.mac, ETH_P_IP, forged)], nonce, to_victim=True)
    assert seen.carrying(f"forged-{nonce}".encode()) == []
    assert seen.victim == [[a.ip, f"marker-{nonce}"]]


def test_ipv6_from_a_sandbox_is_dropped(ready: Lab) -> None:
    # sandboxd assigns no IPv6; link-local multicast (what neighbour discovery and router
    # advertisements use) would otherwise reach the host and every neighbour.
    lab, a = ready, ready.attacker
    nonce = secrets.token_hex(6)
    datagram = udp6("fe80::5b:aff:fe00:1", "ff02::1", lab.host_port, f"forged-{nonce}".encode())
    seen = lab.strike([ether("33:33:00:00:00:01", a.mac, ETH_P_IPV6, datagram)], nonce)
    assert seen.carrying(f"forged-{nonce}".encode()) == []


def test_a_forged_ethernet_source_does_not_move_the_victims_mac_in_the_fdb(ready: Lab) -> None:
    # The victim's MAC as source (and the attacker's own, legitimate, IP): without the rules
    # the bridge learns the victim's MAC on the attacker's port and sends it the victim's
    # traffic.
    lab, a, v = ready, ready.attacker, ready.victim
    nonce = secrets.token_hex(6)
    frame = udp4(a.ip, lab.gateway, lab.host_port, f"forged-{nonce}".encode())
    seen = lab.strike([ether(lab.gateway_mac, v.mac, ETH_P_IP, frame)], nonce)
    assert lab.fdb_port(v.mac) == v.veth
    assert seen.carrying(f"forged-{nonce}".encode()) == []
    lab.host_roundtrip(v)


def test_net_admin_cannot_borrow_the_victims_address(ready: Lab) -> None:
    # No raw socket needed: with NET_ADMIN the unit adds the victim's address to its eth0
    # and forgets the gateway's MAC; the kernel then asks for the gateway "from" the
    # victim's address (which would move the host's entry) and sends the datagram from it.
    lab, d, v = ready, ready.admin, ready.victim
    nonce = secrets.token_hex(6)
    ip = os.path.realpath(shutil.which("ip") or "/usr/sbin/ip")
    assert ip.startswith("/usr/"), ip  # the sandbox has the host's /usr, nothing else of it
    d.peer.call("script", steps=[
        ["run", [ip, "addr", "add", f"{v.ip}/32", "dev", "eth0"]],
        ["run", [ip, "neigh", "flush", "dev", "eth0"]],
        ["udp", v.ip, lab.gateway, lab.host_port, f"forged-{nonce}"],  # queued: ARP first
        # The gateway's MAC, set by hand: the queued datagram leaves whether or not the ARP
        # reply came, then the marker.
        ["run", [ip, "neigh", "replace", lab.gateway, "lladdr", lab.gateway_mac, "dev", "eth0",
                 "nud", "reachable"]],
        ["udp", d.ip, lab.gateway, lab.host_port, f"marker-{nonce}"],
        ["run", [ip, "addr", "del", f"{v.ip}/32", "dev", "eth0"]],
    ])  # fmt: skip
    seen = lab.seen(f"marker-{nonce}")
    assert lab.host_neigh(v.ip) == v.mac
    assert (d.mac, v.ip) not in lab.arp_frames(seen.tap)
    assert seen.carrying(f"forged-{nonce}".encode()) == []
    assert seen.host[-1] == (d.ip, f"marker-{nonce}".encode())


# -- the host side ---------------------------------------------------------------------------


def test_an_unprivileged_host_user_cannot_change_the_rules(lab: Lab) -> None:
    table = table_name(lab.bridge)
    # Stateless (-s): the rules without their counters, which a sandbox's own traffic (an IPv6
    # router solicitation, say) may move at any moment.
    before = sh("nft", "-s", "list", "table", "bridge", table)
    denied = subprocess.run(
        ["nft", "delete", "table", "bridge", table],
        capture_output=True, text=True, check=False, user=65534, group=65534, extra_groups=[],
    )  # fmt: skip
    assert denied.returncode != 0 and "Operation not permitted" in denied.stderr, denied
    assert sh("nft", "-s", "list", "table", "bridge", table) == before
