"""Bridge mode on the real kernel, as root, with a stand-in for the launcher.

The stand-in forks a child that unshares its net namespace and waits on a pipe: the same state
the launcher leaves a sandbox's PID 1 in when `NetworkManager.attach` runs. Servers and clients
run inside with `nsenter --net`. Every test uses its own bridge ("sbxt<n>") and a /24 of
10.201.0.0/16, so it never meets a real daemon's sbx0; the fixtures delete what they created
and then check that `ip -o link` shows no veth or bridge of ours.

Traffic only goes to addresses inside namespaces the tests created (and to the test bridge).
Each bridge's anti-spoofing table ("sandboxd-<bridge>", antispoof.py) goes with the bridge;
the fixtures check that too. What the rules stop is tests/security/test_bridge_spoofing.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import pytest

from supervisor.config import DaemonConfig
from supervisor.errors import NetworkError
from supervisor.linux import nftables
from supervisor.sandbox.host.antispoof import table_name
from supervisor.sandbox.host.ipam import mac_for
from supervisor.sandbox.host.network import NetworkManager, NetworkPlan
from supervisor.unit.schema import Network
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root]
CLONE_NEWNET = 0x40000000
_serial = count()
BRIDGE = Network(mode="bridge")


# -- a sandbox stand-in ----------------------------------------------------------------------


@dataclass
class FakeSandbox:
    """A child in its own netns, blocked on a pipe like PID 1 before its go byte."""

    pid: int
    release_fd: int

    @property
    def netns(self) -> str:
        return f"/proc/{self.pid}/ns/net"

    def argv(self, *cmd: str) -> list[str]:
        return ["nsenter", f"--net={self.netns}", "--", *cmd]

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*cmd), capture_output=True, text=True, timeout=timeout, check=False
        )

    def popen(self, *cmd: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv(*cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def serve_http(self, ip: str, port: int, root: Path) -> subprocess.Popen[bytes]:
        return serve_http(self.argv(), ip, port, root)

    def netns_inode(self) -> int:
        return os.stat(self.netns).st_ino

    def end(self, sig: int | None = None) -> None:
        if self.release_fd >= 0:
            if sig is not None:
                os.kill(self.pid, sig)
            os.close(self.release_fd)
            self.release_fd = -1
            os.waitpid(self.pid, 0)


def serve_http(prefix: list[str], ip: str, port: int, root: Path) -> subprocess.Popen[bytes]:
    """`python3 -m http.server PORT --bind IP` serving `root`, run after `prefix` (nsenter).

    http.server looks its own address up at start (socket.getfqdn). Inside a sandbox no DNS
    server is reachable, so that stalls for the resolver's whole timeout (10 s here), and on
    the host it would query the host's resolver. A private /etc/hosts (own mount namespace)
    naming the address answers locally: no packet leaves the namespaces under test.
    """
    hosts = root.parent / f"hosts-{ip}"
    hosts.write_text(f"127.0.0.1 localhost\n{ip} sandbox\n")
    return subprocess.Popen(
        [
            *prefix,
            "unshare",
            "--mount",
            "--",
            "sh",
            "-c",
            'mount --bind "$0" /etc/hosts && exec "$@"',
            str(hosts),
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            ip,
            "-d",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def spawn_sandbox() -> FakeSandbox:
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: raw os calls only, then _exit
        try:
            # Drop every other fd, above all the go pipes of earlier stand-ins: a copy held
            # here would keep their pipes open and their children waiting forever.
            os.closerange(3, min(ready_w, go_r))
            os.closerange(min(ready_w, go_r) + 1, max(ready_w, go_r))
            os.closerange(max(ready_w, go_r) + 1, 1 << 16)
            if libc.unshare(CLONE_NEWNET) != 0:
                os._exit(1)
            os.write(ready_w, b"r")
            os.read(go_r, 1)  # returns b"" when the parent closes its end
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    assert os.read(ready_r, 1) == b"r", "child could not unshare its netns"
    os.close(ready_r)
    box = FakeSandbox(pid, go_w)
    # The launcher's PID 1 brings lo up itself; do the same here.
    assert box.run("ip", "link", "set", "lo", "up").returncode == 0
    return box


# -- fixtures --------------------------------------------------------------------------------


def links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def has_link(name: str | None) -> bool:
    assert name
    return (
        subprocess.run(["ip", "link", "show", name], capture_output=True, check=False).returncode
        == 0
    )


@dataclass
class Env:
    net: NetworkManager
    config: DaemonConfig
    subnet: ipaddress.IPv4Network

    def manager(self) -> NetworkManager:
        """A fresh manager on the same config: what a restarted daemon builds."""
        return NetworkManager(self.config)


@dataclass(frozen=True)
class Rules:
    """A bridge's anti-spoofing table as the kernel has it: port chains and map entries."""

    chains: set[str]
    ports: set[str]

    @property
    def filtered(self) -> set[str]:
        """Ports whose frames go through their chain (both halves must be there)."""
        assert self.chains == self.ports, f"chains {self.chains} but ports {self.ports}"
        return self.ports


def rules(bridge: str) -> Rules | None:
    """The table of `bridge`, or None if there is none."""
    got = subprocess.run(
        ["nft", "-j", "list", "table", "bridge", table_name(bridge)],
        capture_output=True,
        text=True,
        check=False,
    )
    if got.returncode != 0:
        return None
    items = json.loads(got.stdout)["nftables"]
    chains = {i["chain"]["name"] for i in items if "chain" in i} - {"prerouting"}
    ports = {e[0] for i in items if "map" in i for e in i["map"].get("elem", [])}
    return Rules(chains, ports)


def filtered(bridge: str) -> set[str]:
    """The ports of `bridge` that have their rules (a chain and the map entry to it)."""
    table = rules(bridge)
    assert table is not None, f"no table {table_name(bridge)}"
    return table.filtered


def port_chain(bridge: str, veth: str | None) -> str:
    """The port's chain as `nft list` prints it."""
    assert veth
    argv = ["nft", "list", "chain", "bridge", table_name(bridge), veth]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@contextlib.contextmanager
def bridge_env(tmp_path: Path, ipv6: bool = False) -> Iterator[Env]:
    """A manager on its own bridge and /24 (and a ULA /64 with `ipv6`); afterwards no link and
    no table of it is left."""
    n = (os.getpid() * 7 + next(_serial)) % 250
    bridge = f"sbxt{os.getpid() % 1000}x{next(_serial)}"
    subnet = ipaddress.IPv4Network(f"10.201.{n}.0/24")
    network = {"bridge": bridge, "subnet": str(subnet)}
    if ipv6:
        network["subnet6"] = f"fd00:201:{n:x}::/64"
    config = DaemonConfig.model_validate({"data_dir": str(tmp_path / "data"), "network": network})
    net = NetworkManager(config)
    try:
        yield Env(net, config, subnet)
    finally:
        # Every unit that got a veth has a lease (tests that release one also end it).
        ours = {net.veth_for(unit) for unit in net.leases.leases()}
        # Veths whose netns is still being freed by the kernel would outlive the bridge.
        asyncio.run(net.cleanup_orphans(running=set()))
        asyncio.run(net.remove_bridge())
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
    # Deleting the bridge leaves its ports; any veth still around is a leak of the test. Only
    # ours are looked for: another env of the test, or other tests, may have theirs up.
    left = [
        line
        for line in links().splitlines()
        if bridge in line or any(f" {veth}@" in line for veth in ours)
    ]
    assert left == [], f"links left behind: {left}"
    assert rules(bridge) is None, f"table {table_name(bridge)} left behind"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with bridge_env(tmp_path) as made:
        yield made


@pytest.fixture
def sandboxes() -> Iterator[list[FakeSandbox]]:
    boxes: list[FakeSandbox] = []
    try:
        yield boxes
    finally:
        for box in boxes:
            box.end()


def start(env: Env, boxes: list[FakeSandbox], unit: str, network: Network = BRIDGE) -> NetworkPlan:
    box = spawn_sandbox()
    boxes.append(box)

    async def go() -> NetworkPlan:
        plan = await env.net.prepare(unit, network)
        await env.net.attach(plan, box.pid)
        return plan

    plan = asyncio.run(go())
    assert threading.active_count() == 1, "pyroute2 left a thread in the daemon"
    return plan


def wait_http(url: str, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return bytes(reply.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def host_veths(env: Env, *units: str) -> set[str]:
    text = links()
    return {env.net.veth_for(u) for u in units if f" {env.net.veth_for(u)}@" in text}


def wait_gone(predicate: object, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


# -- the network works -----------------------------------------------------------------------


def test_sandbox_side_is_eth0_with_address_and_default_route(
    env: Env, sandboxes: list[FakeSandbox]
) -> None:
    plan = start(env, sandboxes, "web")
    box = sandboxes[0]
    assert plan.address == ipaddress.IPv4Interface(f"{env.subnet.network_address + 2}/24")
    addrs = json.loads(box.run("ip", "-j", "addr").stdout)
    names = sorted(a["ifname"] for a in addrs)
    assert names == ["eth0", "lo"]  # nothing else leaked into the sandbox
    eth0 = next(a for a in addrs if a["ifname"] == "eth0")
    assert "UP" in eth0["flags"]
    # A MAC that follows the address: peers' ARP entries survive a restart of the sandbox.
    assert plan.address is not None and eth0["address"] == mac_for(plan.address.ip)
    v4 = [(i["local"], i["prefixlen"]) for i in eth0["addr_info"] if i["family"] == "inet"]
    assert v4 == [(str(plan.address.ip), 24)] if plan.address else False
    route = box.run("ip", "route", "show", "default").stdout
    assert route.startswith(f"default via {env.subnet.network_address + 1} dev eth0")
    # The host end is on our bridge and says whose it is.
    host = subprocess.run(
        ["ip", "-d", "-o", "link", "show", str(plan.host_veth)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert f"master {env.net.bridge}" in host and "alias sandboxd:web" in host
    assert len(plan.host_veth or "") <= 15


def test_two_sandboxes_and_host_talk_over_http(
    env: Env, sandboxes: list[FakeSandbox], tmp_path: Path
) -> None:
    server = start(env, sandboxes, "server")
    start(env, sandboxes, "client")
    srv, cli = sandboxes
    www = tmp_path / "www"
    www.mkdir()
    (www / "hello.txt").write_text("hello from the server sandbox\n")
    ip = server.address.ip if server.address else None
    httpd = srv.serve_http(str(ip), 8080, www)
    try:
        # Host -> sandbox, through the bridge's address.
        url = f"http://{ip}:8080/hello.txt"
        assert wait_http(url) == b"hello from the server sandbox\n"
        # Sandbox -> sandbox: a real client in the other netns.
        got = cli.run("curl", "-sS", "--max-time", "5", url)
        assert got.returncode == 0, got.stderr
        assert got.stdout == "hello from the server sandbox\n"
    finally:
        httpd.terminate()
        httpd.wait(timeout=10)


def test_sandbox_reaches_the_host_by_the_gateway_address(
    env: Env, sandboxes: list[FakeSandbox], tmp_path: Path
) -> None:
    start(env, sandboxes, "client")
    gateway = env.subnet.network_address + 1
    www = tmp_path / "www"
    www.mkdir()
    (www / "host.txt").write_text("from the host\n")
    # A server in the host's netns, bound only to the test bridge's address.
    httpd = serve_http([], str(gateway), 8081, www)
    try:
        wait_http(f"http://{gateway}:8081/host.txt")
        got = sandboxes[0].run("curl", "-sS", "--max-time", "5", f"http://{gateway}:8081/host.txt")
        assert got.returncode == 0, got.stderr
        assert got.stdout == "from the host\n"
    finally:
        httpd.terminate()
        httpd.wait(timeout=10)


def test_loopback_works_inside_a_bridge_sandbox(env: Env, sandboxes: list[FakeSandbox]) -> None:
    start(env, sandboxes, "web")
    box = sandboxes[0]
    for host in ("127.0.0.1", "::1"):
        got = box.run("ping", "-c1", "-W2", host) if _has("ping") else None
        if got is not None:
            assert got.returncode == 0, got.stderr
    got = box.run(sys.executable, "-c", LOOPBACK_PROBE)
    assert got.returncode == 0, got.stderr + got.stdout


def _has(tool: str) -> bool:
    return any(os.access(os.path.join(d, tool), os.X_OK) for d in os.get_exec_path())


# Listens and connects on 127.0.0.1 and ::1 inside the netns it runs in.
LOOPBACK_PROBE = """
import socket
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    with socket.socket(family) as srv:
        srv.bind((host, 0)); srv.listen()
        with socket.create_connection((host, srv.getsockname()[1]), timeout=2) as c:
            peer, _ = srv.accept(); c.sendall(b"ping"); assert peer.recv(4) == b"ping"; peer.close()
"""


# -- leases ----------------------------------------------------------------------------------


def test_static_and_allocated_addresses_are_kept_across_restarts(
    env: Env, sandboxes: list[FakeSandbox]
) -> None:
    static = f"{env.subnet.network_address + 42}/24"
    first_static = start(env, sandboxes, "db", Network(mode="bridge", address=static))
    first_dynamic = start(env, sandboxes, "web")
    for box in sandboxes:
        box.end()
    asyncio.run(env.net.detach("db"))
    asyncio.run(env.net.detach("web"))
    sandboxes.clear()
    # The daemon restarts (fresh manager, same files) and the units start again.
    env.net = env.manager()
    assert start(env, sandboxes, "web").address == first_dynamic.address
    assert start(env, sandboxes, "db", Network(mode="bridge", address=static)).address == (
        first_static.address
    )


# -- cleanup ---------------------------------------------------------------------------------


def test_stop_leaves_no_veth_and_no_netns(env: Env, sandboxes: list[FakeSandbox]) -> None:
    plan = start(env, sandboxes, "web")
    box = sandboxes[0]
    inode = box.netns_inode()
    box.end(signal.SIGTERM)
    assert asyncio.run(env.net.detach("web")) in (True, False)  # the kernel may be first
    assert host_veths(env, "web") == set()
    assert not has_link(plan.host_veth)
    assert _netns_in_use(inode) == []
    # Leases survive a stop; only removing the unit frees them.
    assert "web" in env.net.leases.leases()
    assert env.net.release("web") is True
    assert env.net.leases.leases() == {}


def test_service_crash_frees_netns_and_veth_without_help(
    env: Env, sandboxes: list[FakeSandbox]
) -> None:
    start(env, sandboxes, "web")
    box = sandboxes[0]
    inode = box.netns_inode()
    box.end(signal.SIGKILL)
    # No detach: the kernel destroys the netns with its last process, and the veth with it.
    assert wait_gone(lambda: host_veths(env, "web")), "veth outlived its netns"
    assert _netns_in_use(inode) == []
    assert asyncio.run(env.net.detach("web")) is False


def test_daemon_crash_then_cleanup_orphans(env: Env, sandboxes: list[FakeSandbox]) -> None:
    for unit in ("keep", "died", "removed"):
        start(env, sandboxes, unit)
    keep, died, removed = sandboxes
    # The daemon dies: its in-memory state is lost, the sandboxes live on ...
    del env.net
    # ... two of them end while it is down (the veths linger until the kernel frees the netns).
    died.end(signal.SIGKILL)
    removed.end(signal.SIGKILL)
    restarted = NetworkManager(DaemonConfig.model_validate(env.config.model_dump()))
    env.net = restarted
    # "removed" lost its unit file while the daemon was down.
    report = asyncio.run(restarted.cleanup_orphans(running={"keep"}, known={"keep", "died"}))
    assert report.released_leases == ["removed"]
    assert set(report.removed_veths) <= {restarted.veth_for("died"), restarted.veth_for("removed")}
    assert host_veths(env, "keep", "died", "removed") == {restarted.veth_for("keep")}
    assert set(restarted.leases.leases()) == {"keep", "died"}
    # The survivor still works.
    ip = next(iter(json.loads(keep.run("ip", "-j", "-4", "addr", "show", "eth0").stdout)))
    assert ip["addr_info"][0]["local"] == str(env.subnet.network_address + 2)


def test_cleanup_orphans_removes_a_live_but_unknown_veth(
    env: Env, sandboxes: list[FakeSandbox]
) -> None:
    # A sandbox the restarted daemon could not re-adopt: its veth goes (it is unreachable
    # for the engine anyway); its process is the engine's business, not ours.
    start(env, sandboxes, "ghost")
    report = asyncio.run(env.manager().cleanup_orphans(running=set(), known={"ghost"}))
    assert report.removed_veths == [env.net.veth_for("ghost")]
    assert host_veths(env, "ghost") == set()


# -- anti-spoofing rules ---------------------------------------------------------------------


def test_attach_installs_the_ports_rules_and_detach_removes_them(
    env: Env, sandboxes: list[FakeSandbox]
) -> None:
    web = start(env, sandboxes, "web")
    db = start(env, sandboxes, "db")
    bridge = env.net.bridge
    assert filtered(bridge) == {web.host_veth, db.host_veth}
    assert web.address is not None
    chain = port_chain(bridge, web.host_veth)
    assert f"ether saddr != {mac_for(web.address.ip)}" in chain
    assert (
        f"arp saddr ether {mac_for(web.address.ip)} arp saddr ip {web.address.ip} accept" in chain
    )
    assert f"ip saddr {web.address.ip} accept" in chain
    sandboxes[0].end(signal.SIGKILL)
    asyncio.run(env.net.detach("web"))
    assert filtered(bridge) == {db.host_veth}
    assert asyncio.run(env.net.detach("web")) is False  # again: nothing to remove, no error
    assert filtered(bridge) == {db.host_veth}


def test_cleanup_orphans_rebuilds_the_rules_of_the_survivors_on_its_own_bridge_only(
    env: Env, sandboxes: list[FakeSandbox], tmp_path: Path
) -> None:
    with bridge_env(tmp_path / "other") as other:
        theirs = start(other, sandboxes, "theirs")
        keep = start(env, sandboxes, "keep")
        died = start(env, sandboxes, "died")
        sandboxes[2].end(signal.SIGKILL)  # while "the daemon" is down
        report = asyncio.run(env.manager().cleanup_orphans(running={"keep"}, known={"keep"}))
        assert report.filtered_ports == [keep.host_veth]
        assert filtered(env.net.bridge) == {keep.host_veth}
        assert keep.address is not None
        assert f"ip saddr {keep.address.ip} accept" in port_chain(env.net.bridge, keep.host_veth)
        assert not has_link(died.host_veth)
        # The other daemon's bridge, ports and table are untouched.
        assert filtered(other.net.bridge) == {theirs.host_veth}
        assert has_link(theirs.host_veth)
        sandboxes[0].end(signal.SIGKILL)


def test_cleanup_orphans_cuts_off_a_running_unit_whose_address_it_does_not_know(
    env: Env, sandboxes: list[FakeSandbox]
) -> None:
    # Its lease is gone (as after a subnet change): no rules could say what it may send, and
    # an unfiltered port could spoof, so its veth goes (the sandbox itself is the engine's).
    plan = start(env, sandboxes, "drifted")
    env.net.release("drifted")
    report = asyncio.run(env.manager().cleanup_orphans(running={"drifted"}, known={"drifted"}))
    assert report.removed_veths == [plan.host_veth]
    assert report.filtered_ports == []
    assert not has_link(plan.host_veth)
    assert filtered(env.net.bridge) == set()


def test_a_lost_table_is_rebuilt_by_the_next_attach_for_every_live_port(
    env: Env, sandboxes: list[FakeSandbox]
) -> None:
    first = start(env, sandboxes, "first")
    # An operator's `nft flush ruleset` (here: only this test's table) takes the rules.
    subprocess.run(["nft", "delete", "table", "bridge", table_name(env.net.bridge)], check=True)
    second = start(env, sandboxes, "second")
    assert filtered(env.net.bridge) == {first.host_veth, second.host_veth}


def test_attach_fails_closed_when_the_rules_cannot_be_installed(
    env: Env, sandboxes: list[FakeSandbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    box = spawn_sandbox()
    sandboxes.append(box)
    plan = asyncio.run(env.net.prepare("web", BRIDGE))
    monkeypatch.setattr(nftables, "find_nft", lambda: "/bin/false")
    with pytest.raises(NetworkError, match="cannot install the rules of table bridge sandboxd-"):
        asyncio.run(env.net.attach(plan, box.pid))
    monkeypatch.undo()
    assert not has_link(plan.host_veth)  # no port without its rules
    # With nft back, the restart works and repairs the table.
    box.end()
    sandboxes.remove(box)
    again = start(env, sandboxes, "web")
    assert filtered(env.net.bridge) == {again.host_veth}


def _netns_in_use(inode: int) -> list[int]:
    """PIDs whose netns is the one with this inode."""
    users = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                    users.append(int(entry))
            except OSError:
                continue
    return users


# -- bad input -------------------------------------------------------------------------------


def _no_trace(env: Env, unit: str) -> None:
    assert unit not in env.net.leases.leases()
    assert not has_link(env.net.veth_for(unit))


def test_address_already_taken(env: Env, sandboxes: list[FakeSandbox]) -> None:
    taken = f"{env.subnet.network_address + 2}"
    start(env, sandboxes, "first")
    with pytest.raises(NetworkError, match=f"address {taken} is already leased to unit 'first'"):
        asyncio.run(env.net.prepare("second", Network(mode="bridge", address=f"{taken}/24")))
    _no_trace(env, "second")


def test_address_outside_subnet(env: Env) -> None:
    with pytest.raises(NetworkError, match="outside the daemon's subnet"):
        asyncio.run(env.net.prepare("web", Network(mode="bridge", address="10.202.250.9/24")))
    _no_trace(env, "web")
    assert not has_link(env.net.bridge)  # failed before touching the kernel


def add_veth_pair(name: str) -> None:
    """A non-bridge link to get in the way (veth: this kernel may lack the dummy driver)."""
    peer = f"sbxtp{os.getpid() % 1000}x{next(_serial)}"
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", peer], check=True)


def test_bridge_name_taken_by_another_kind_of_link(env: Env) -> None:
    add_veth_pair(env.net.bridge)
    with pytest.raises(NetworkError, match=f"link '{env.net.bridge}' exists and is a veth"):
        asyncio.run(env.net.prepare("web", BRIDGE))
    _no_trace(env, "web")
    shown = subprocess.run(
        ["ip", "-d", "-o", "link", "show", env.net.bridge],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "veth" in shown.stdout  # untouched; the fixture deletes it (and its peer)


def test_subnet_already_used_on_the_host(env: Env) -> None:
    other = f"{env.net.bridge}d"
    add_veth_pair(other)
    try:
        subprocess.run(
            ["ip", "addr", "add", f"{env.subnet.network_address + 200}/24", "dev", other],
            check=True,
        )
        with pytest.raises(NetworkError, match=f"overlaps {env.subnet} on host interface"):
            asyncio.run(env.net.prepare("web", BRIDGE))
        _no_trace(env, "web")
        assert not has_link(env.net.bridge)
    finally:
        subprocess.run(["ip", "link", "del", other], check=True)


def test_attach_refuses_the_daemons_own_netns(env: Env) -> None:
    plan = asyncio.run(env.net.prepare("web", BRIDGE))
    with pytest.raises(NetworkError, match="shares the daemon's netns"):
        asyncio.run(env.net.attach(plan, os.getpid()))
    assert not has_link(plan.host_veth)


def test_attach_to_a_vanished_sandbox(env: Env, sandboxes: list[FakeSandbox]) -> None:
    box = spawn_sandbox()
    sandboxes.append(box)
    plan = asyncio.run(env.net.prepare("web", BRIDGE))
    box.end()
    with pytest.raises(NetworkError, match=f"cannot open the netns of pid {box.pid}"):
        asyncio.run(env.net.attach(plan, box.pid))
    assert not has_link(plan.host_veth)


def test_failed_attach_removes_the_half_built_veth(env: Env, sandboxes: list[FakeSandbox]) -> None:
    box = spawn_sandbox()
    sandboxes.append(box)
    # Something inside already holds the name "eth0": creating the peer must fail.
    made = box.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
    assert made.returncode == 0, made.stderr
    plan = asyncio.run(env.net.prepare("web", BRIDGE))
    with pytest.raises(NetworkError, match="cannot create veth"):
        asyncio.run(env.net.attach(plan, box.pid))
    assert not has_link(plan.host_veth)
