"""Outbound NAT and published ports through a real daemon (nat.py, nattable.py).

"The outside world" is a network namespace of the test's own, joined to the host by a veth pair
on a free /30 of 192.0.2.0/24 (TEST-NET-1: never a real address), with a tiny HTTP server that
answers with the client address it sees. Each test's daemon has its own bridge and /24 of
10.201.0.0/16 (test_daemon_network's `net` fixture, which also checks that no veth, netns or
anti-spoofing rule is left); on top, the fixtures here check that the NAT table is gone and
that a foreign table, with rules, is byte for byte what it was before the daemon started.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from typing import Any

import pytest
from test_daemon_network import HTTP_CLIENT, PYTHON, Net, get, net, post, running, sh

from supervisor.sandbox.host import nat
from tests.support.daemon_kit import Daemon, pid_alive, wait_for
from tests.support.ipnetns import run_netns_mounted, unmount_run_netns
from tests.support.requires import requires_root

__all__ = ["net"]  # the fixture, imported for the tests below
# cgroup_v2: also in the v2 VM (scripts/test-v2.sh), whose kernel has its own nf_tables build.
pytestmark = [pytest.mark.root, requires_root, pytest.mark.cgroup_v2]
_serial = count()

OUTSIDE_SERVER = """
import http.server, sys
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"from {self.client_address[0]}\\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer((sys.argv[1], 8000), Echo).serve_forever()
"""


@dataclass
class Outside:
    ns: str
    host_ip: str  # the host's end of the veth
    ip: str  # the outside world's address, where its server listens

    def run(self, *argv: str) -> str:
        return sh("ip", "netns", "exec", self.ns, *argv)

    def fetch(self, url: str) -> str:
        return self.run(PYTHON, "-c", HTTP_CLIENT, url)


def free_slash30() -> int:
    used = sh("ip", "-o", "-4", "addr")
    for i in range(63):
        base = ((i + os.getpid()) % 63 + 1) * 4
        if f" 192.0.2.{base + 1}/" not in used and f" 192.0.2.{base + 2}/" not in used:
            return base
    raise AssertionError("no free /30 of 192.0.2.0/24 on this host")


@pytest.fixture
def outside() -> Iterator[Outside]:
    n = next(_serial)
    ns, host_if = f"sbxout{os.getpid()}n{n}", f"sbxo{os.getpid() % 100000}n{n}"
    base = free_slash30()
    world = Outside(ns, f"192.0.2.{base + 1}", f"192.0.2.{base + 2}")
    mounted = run_netns_mounted()
    sh("ip", "netns", "add", ns)
    server = None
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "addr", "add", f"{world.host_ip}/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        world.run("ip", "addr", "add", f"{world.ip}/30", "dev", "eth0")
        world.run("ip", "link", "set", "eth0", "up")
        world.run("ip", "link", "set", "lo", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, PYTHON, "-c", OUTSIDE_SERVER, world.ip],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert get(f"http://{world.ip}:8000/") == f"from {world.host_ip}\n"
        yield world
    finally:
        if server is not None:
            server.kill()  # the test's own server, by its PID
            server.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        unmount_run_netns(mounted)


FOREIGN = f"foreign{os.getpid()}"


@pytest.fixture
def foreign() -> Iterator[str]:
    """Another program's tables, with rules in the hooks ours use: their listing (handles
    included) must never change."""
    batch = f"""
table ip {FOREIGN} {{
    chain post {{ type nat hook postrouting priority srcnat; policy accept;
        ip saddr 203.0.113.7 counter masquerade comment "not sandboxd's"
    }}
    chain forwarded {{ type filter hook forward priority filter; policy accept;
        ip saddr 203.0.113.7 counter drop
    }}
}}
table inet {FOREIGN} {{
    set blocked {{ type ipv4_addr; elements = {{ 203.0.113.8 }} }}
    chain pre {{ type nat hook prerouting priority dstnat; policy accept;
        ip saddr @blocked tcp dport 8080 counter dnat ip to 203.0.113.9
    }}
}}
"""
    subprocess.run(["nft", "-f", "-"], input=batch, text=True, check=True)
    try:
        yield listing()
        assert listing() == listing()  # stable: comparing listings is meaningful
    finally:
        for family in ("ip", "inet"):
            subprocess.run(["nft", "delete", "table", family, FOREIGN], check=False)


def listing() -> str:
    return sh("nft", "-a", "list", "table", "ip", FOREIGN) + sh(
        "nft", "-a", "list", "table", "inet", FOREIGN
    )


def table(bridge: str) -> dict[str, Any] | None:
    """Our NAT table as nft's JSON objects by kind, or None if there is none."""
    got = subprocess.run(
        ["nft", "-j", "list", "table", "ip", nat.table_name(bridge)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if got.returncode != 0:
        return None
    objects: dict[str, Any] = {"chain": [], "rule": [], "map": {}, "set": {}}
    for item in json.loads(got.stdout)["nftables"]:
        for kind in ("chain", "rule"):
            if kind in item:
                objects[kind].append(item[kind])
        for kind in ("map", "set"):
            if kind in item:
                objects[kind][item[kind]["name"]] = item[kind].get("elem", [])
    return objects


def unit_chains(bridge: str) -> list[str]:
    found = table(bridge)
    assert found is not None
    base = {"guard", "prerouting", "output", "ports", "forward", "postrouting"}
    return sorted(c["name"] for c in found["chain"] if c["name"] not in base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def one_shot(net: Net, name: str, url: str, network: str = 'mode = "bridge"') -> str:
    """Run a client unit that GETs `url` once the daemon runs; its output."""
    net.write(
        name, f'exec = ["{PYTHON}", "-c", {json.dumps(HTTP_CLIENT)}, "{url}"]', network,
        restart='policy = "no"',
    )  # fmt: skip
    d = net.daemon
    assert name in post(d, "/v1/reload")["started"]
    done = d.wait_unit(name, lambda u: u["state"] in ("exited", "failed"), 90)
    assert done["last_exit"] == "exit-code:0", (done, d.output(name))
    return d.output(name)


def published_web(net: Net, *ports: str) -> None:
    net.server("web")
    text = (net.daemon.units / "web.toml").read_text()
    listed = ", ".join(json.dumps(p) for p in ports)
    text = text.replace('mode = "bridge"\n', f'mode = "bridge"\nports = [{listed}]\n')
    net.daemon.write_unit("web", text)


def test_nat_ports_hairpin_readoption_and_stop(net: Net, outside: Outside, foreign: str) -> None:
    d = net.daemon
    port, local_port = free_port(), free_port()
    published_web(net, f"{port}:8080", f"127.0.0.1:{local_port}:8080")
    d.start()
    d.wait_unit("web", running, 60)
    hello = "hello from web\n"

    # The outside world reaches the published port on the host's address facing it.
    assert outside.fetch(f"http://{outside.host_ip}:{port}/hello.txt") == hello
    # The host reaches it through 127.0.0.1 (the output hook), on both ports.
    assert get(f"http://127.0.0.1:{port}/hello.txt") == hello
    assert get(f"http://127.0.0.1:{local_port}/hello.txt") == hello
    # A sandbox reaches the outside world, which sees the host's address (masquerade).
    assert one_shot(net, "client", f"http://{outside.ip}:8000/") == f"from {outside.host_ip}\n"
    # Hairpin: a neighbour through the bridge address and through another host address.
    assert one_shot(net, "hair1", f"http://{net.prefix}1:{port}/hello.txt") == hello
    assert one_shot(net, "hair2", f"http://{outside.host_ip}:{port}/hello.txt") == hello
    # 127.0.0.1:<local_port> is the host's own loopback: from a sandbox that is its own lo.
    assert listing() == foreign

    # The unit's rules: one chain, commented with its name, one element per published port.
    assert unit_chains(net.bridge) == [net.veth("web")]
    found = table(net.bridge)
    assert found is not None
    comments = {r.get("comment") for r in found["rule"] if r["chain"] == net.veth("web")}
    assert comments == {"sandboxd unit web"}
    assert len(found["map"]["published"]) == 1 and len(found["map"]["published_at"]) == 1

    # kill -9 and a new daemon: the sandbox is re-adopted, its rules rebuilt once.
    web_pid = d.unit("web")["pid"]
    d.wait_recorded()
    d.kill9()
    d.start()
    assert d.wait_unit("web", running, 60)["pid"] == web_pid
    assert get(f"http://127.0.0.1:{port}/hello.txt") == hello
    assert outside.fetch(f"http://{outside.host_ip}:{port}/hello.txt") == hello
    found = table(net.bridge)
    assert found is not None
    assert unit_chains(net.bridge) == [net.veth("web")]  # the one-shot clients' are gone
    assert len(found["map"]["published"]) == 1 and len(found["map"]["published_at"]) == 1
    assert len([r for r in found["rule"] if r["chain"] == net.veth("web")]) == 2
    assert len(found["set"]["outbound"]) == 1
    assert sorted(os.listdir(d.data / "network" / "nat")) == ["web.json"]
    assert listing() == foreign

    # A clean stop stops the units: no rule, no table, no state file left.
    assert d.stop() == 0
    assert table(net.bridge) is None
    assert os.listdir(d.data / "network" / "nat") == []
    assert listing() == foreign


def test_removed_units_lose_their_rules_after_a_daemon_kill9(net: Net, foreign: str) -> None:
    d = net.daemon
    port = free_port()
    published_web(net, f"{port}:8080")
    net.write(
        "gone", 'exec = ["/bin/sleep", "1000"]', f'mode = "bridge"\nports = ["{free_port()}:1"]'
    )
    d.start()
    gone = d.wait_unit("gone", running, 60)
    d.wait_unit("web", running, 60)
    assert unit_chains(net.bridge) == sorted([net.veth("web"), net.veth("gone")])
    d.wait_recorded()
    d.kill9()
    d.remove_unit("gone")
    os.kill(int(str(gone["pid"])), 9)  # this test daemon's sandbox
    wait_for(lambda: not pid_alive(int(str(gone["pid"]))), 60)
    d.start()
    d.wait_unit("web", running, 60)
    assert unit_chains(net.bridge) == [net.veth("web")]
    assert get(f"http://127.0.0.1:{port}/hello.txt") == "hello from web\n"
    assert listing() == foreign
    assert d.stop() == 0
    assert table(net.bridge) is None and listing() == foreign


def test_without_outbound_nothing_leaves_the_host(net: Net, outside: Outside) -> None:
    d = net.daemon
    probe = (
        f"import socket\ntry:\n    socket.create_connection(('{outside.ip}', 8000), timeout=5)\n"
        "except OSError as e:\n    print('refused', type(e).__name__)\nelse:\n    print('reached')"
    )
    net.write(
        "sealed", f'exec = ["{PYTHON}", "-c", {json.dumps(probe)}]',
        'mode = "bridge"\noutbound = false', restart='policy = "no"',
    )  # fmt: skip
    d.start()
    done = d.wait_unit("sealed", lambda u: u["state"] in ("exited", "failed"), 90)
    assert done["last_exit"] == "exit-code:0", d.output("sealed")
    # The SYNs were dropped on forwarding (the counter says so), not merely left un-NATed.
    assert d.output("sealed") == "refused TimeoutError\n"
    assert d.unit("sealed")["network"]["outbound"] is False
    assert d.stop() == 0


def test_status_shows_published_ports(net: Net) -> None:
    d = net.daemon
    port = free_port()
    published_web(net, f"{port}:8080", "127.0.0.1:15353:53/udp")
    d.start()
    web = d.wait_unit("web", running, 60)
    assert web["network"]["ports"] == [f"{port}:8080/tcp", "127.0.0.1:15353:53/udp"]
    assert web["network"]["outbound"] is True
    env = {**os.environ, "SANDBOXD_SOCKET": str(d.socket), "NO_COLOR": "1"}
    shown = subprocess.run(
        [PYTHON, "-m", "supervisor.cli.main", "status", "web"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert f"gateway {net.prefix}1), ports {port}:8080/tcp, 127.0.0.1:15353:53/udp\n" in (
        shown.stdout
    ), shown
    assert d.stop() == 0


def test_a_daemon_stop_leaves_no_nat_table_behind(net: Net) -> None:
    # The fixture of test_daemon_network checks veths and the bridge table; this the NAT one.
    d: Daemon = net.daemon
    net.write("plain", 'exec = ["/bin/sleep", "1000"]')
    d.start()
    d.wait_unit("plain", running, 60)
    assert table(net.bridge) is not None  # outbound = true by default
    assert post(d, "/v1/units/plain/stop")["state"] == "stopped"
    assert table(net.bridge) is None  # the last unit took the table with it
    assert d.stop() == 0


def test_a_table_deleted_by_hand_is_rebuilt_whole_by_the_next_start(net: Net) -> None:
    d = net.daemon
    port = free_port()
    published_web(net, f"{port}:8080")
    d.start()
    d.wait_unit("web", running, 60)
    sh("nft", "delete", "table", "ip", nat.table_name(net.bridge))  # as `nft flush ruleset`
    net.write("other", 'exec = ["/bin/sleep", "1000"]')
    assert post(d, "/v1/reload")["started"] == ["other"]
    d.wait_unit("other", running, 60)
    # The start found the table gone and rebuilt it with every unit, web's port included.
    assert unit_chains(net.bridge) == sorted([net.veth("web"), net.veth("other")])
    assert get(f"http://127.0.0.1:{port}/hello.txt") == "hello from web\n"
    assert d.stop() == 0
    assert table(net.bridge) is None
