"""Bridge networking through a real daemon: units on a test bridge reach each other and the
host; restarts keep the address; stops, crashes and daemon crashes leave no veth or lease.

Each test's daemon gets its own bridge ("sbxt<pid>d<n>") and a free /24 of 10.201.0.0/16 via
its config's [network]; the fixture deletes the bridge and then checks that `ip -o link` shows
nothing of ours and `ip netns` nothing new, and that the bridge's anti-spoofing table holds no
port's rules any more before it deletes that too (the daemon keeps the table, as it keeps the
bridge). Traffic stays inside the test's namespaces.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import pytest
from test_network_bridge import filtered, rules

from supervisor.sandbox.host.antispoof import table_name
from supervisor.sandbox.host.network import veth_name
from tests.support.bridges import free_prefix, remove_bridge
from tests.support.daemon_kit import Daemon, pid_alive, wait_for
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root]
PYTHON = "/usr/bin/python3"
_serial = count()
BRIDGE = 'mode = "bridge"'

# A real client: GET the URL until it answers (the server may still be starting), print it.
HTTP_CLIENT = """
import sys, time, urllib.request
deadline = time.monotonic() + 30
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
            sys.stdout.write(r.read().decode()); break
    except OSError:
        if time.monotonic() > deadline: raise
        time.sleep(0.2)
"""


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@dataclass
class Net:
    daemon: Daemon
    bridge: str
    prefix: str  # "10.201.<n>."

    def veth(self, unit: str) -> str:
        return veth_name(self.bridge, unit)

    def has_veth(self, unit: str) -> bool:
        return f" {self.veth(unit)}@" in sh("ip", "-o", "link")

    def leases(self) -> dict[str, str]:
        path = self.daemon.data / "network" / "leases.json"
        return dict(json.loads(path.read_text())["leases"]) if path.exists() else {}

    def url(self, unit: str) -> str:
        return f"http://{self.leases()[unit]}:8080/hello.txt"

    def write(
        self, name: str, service: str, network: str = 'mode = "bridge"', **extra: str
    ) -> None:
        text = f'[service]\n{service}\nstop_timeout = "3s"\n[network]\n{network}\n'
        for section, body in extra.items():
            text += f"[{section}]\n{body}\n"
        self.daemon.write_unit(name, text)

    def server(self, name: str, restart: str = 'delay = "100ms"') -> None:
        www = self.daemon.base / "www"
        www.mkdir(exist_ok=True)
        (www / "hello.txt").write_text(f"hello from {name}\n")
        # No --bind: http.server then looks up the sandbox's hostname, which its /etc/hosts
        # answers, instead of reverse-resolving an IP through an unreachable DNS server.
        self.write(
            name,
            f'exec = ["{PYTHON}", "-m", "http.server", "8080", "-d", "/srv"]',
            sandbox=f'mounts = [{{ source = "{www}", target = "/srv", read_only = true }}]',
            restart=restart,
        )


@pytest.fixture
def net(daemon: Daemon) -> Iterator[Net]:
    bridge = f"sbxt{os.getpid() % 1000}d{next(_serial)}"
    prefix = free_prefix()
    daemon.config.write_text(f'[network]\nbridge = "{bridge}"\nsubnet = "{prefix}0/24"\n')
    netns_before = sh("ip", "netns", "list")
    yield Net(daemon, bridge, prefix)
    if daemon.proc is not None and daemon.proc.poll() is None:
        daemon.stop()
    # Nothing runs any more: every veth of ours must be gone with its sandbox, and its rules.
    ours = [line for line in sh("ip", "-o", "link").splitlines() if f"master {bridge} " in line]
    table = rules(bridge)
    remove_bridge(bridge)
    assert ours == [], f"veths left on {bridge}: {ours}"
    assert table is None or table.filtered == set(), f"rules left in {table_name(bridge)}"
    assert rules(bridge) is None
    left = [line for line in sh("ip", "-o", "link").splitlines() if bridge in line]
    assert left == [], left
    assert sh("ip", "netns", "list") == netns_before


def get(url: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return str(reply.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def post(daemon: Daemon, path: str) -> dict[str, object]:
    code, body = daemon.request("POST", path)
    assert code == 200, body
    return dict(body)


def running(u: dict[str, object]) -> bool:
    return u["state"] == "running"


def test_units_reach_each_other_and_the_host_across_restart_stop_and_crash(net: Net) -> None:
    d = net.daemon
    net.server("web", restart='delay = "4s"')
    d.start()
    web = d.wait_unit("web", running, 60)
    ip = net.leases()["web"]
    assert ip.startswith(net.prefix) and net.has_veth("web")
    assert get(net.url("web")) == "hello from web\n"  # host -> sandbox
    # sandbox -> sandbox: a one-shot client unit, its answer in its log.
    net.write(
        "client", f'exec = ["{PYTHON}", "-c", {json.dumps(HTTP_CLIENT)}, "{net.url("web")}"]',
        restart='policy = "no"',
    )  # fmt: skip
    assert post(d, "/v1/reload")["started"] == ["client"]
    client = d.wait_unit("client", lambda u: u["state"] in ("exited", "failed"), 60)
    assert client["last_exit"] == "exit-code:0", (client, (d.logs / "client.log").read_text())
    assert (d.logs / "client.log").read_text() == "hello from web\n"
    assert not net.has_veth("client")  # detached after its exit
    assert "client" in net.leases()  # kept: the unit still exists

    # restart: a new sandbox, the same address
    again = post(d, "/v1/units/web/restart")
    assert again["state"] == "running" and again["pid"] != web["pid"]
    assert net.leases()["web"] == ip and get(net.url("web")) == "hello from web\n"

    # the service crashes: no veth while it waits to restart, then the same address again
    os.kill(int(str(again["pid"])), signal.SIGKILL)  # this test daemon's sandbox
    d.wait_unit("web", lambda u: u["state"] == "backoff", 30)
    assert not net.has_veth("web")
    d.wait_unit("web", lambda u: running(u) and u["restarts"] == 1, 60)
    assert net.leases()["web"] == ip and get(net.url("web")) == "hello from web\n"

    # sandboxctl stop: no veth; the lease stays for the next start
    assert post(d, "/v1/units/web/stop")["state"] == "stopped"
    assert not net.has_veth("web") and net.leases()["web"] == ip
    assert d.stop() == 0
    assert net.leases() == {"client": net.leases()["client"], "web": ip}  # daemon exit keeps


def test_daemon_kill9_readopts_and_cleans_up_removed_units(net: Net) -> None:
    d = net.daemon
    net.server("web")
    for name in ("kept", "gone"):
        net.write(name, 'exec = ["/bin/sleep", "1000"]')
    d.start()
    units = {n: d.wait_unit(n, running, 60) for n in ("web", "kept", "gone")}
    assert get(net.url("web")) == "hello from web\n"
    leases = net.leases()
    d.wait_recorded()
    d.kill9()
    # While no daemon runs: one unit is removed but its sandbox lives on; another is removed
    # and its sandbox dies (its veth may outlive it for a moment).
    d.remove_unit("kept")
    d.remove_unit("gone")
    os.kill(int(str(units["gone"]["pid"])), signal.SIGKILL)  # this test daemon's sandbox
    wait_for(lambda: not pid_alive(int(str(units["gone"]["pid"]))), 60)
    d.start()
    web = d.wait_unit("web", running, 60)
    assert web["pid"] == units["web"]["pid"]  # re-adopted, not restarted
    # The killed daemon left the rules of "gone"; the new one rebuilt the table at start.
    assert net.veth("web") in filtered(net.bridge)
    assert net.veth("gone") not in filtered(net.bridge)
    assert get(net.url("web"), timeout=10) == "hello from web\n"
    assert net.has_veth("web") and not net.has_veth("gone") and "gone" not in net.leases()
    # `kept` was re-adopted, then stopped by the reload (stop_timeout: sleep as PID 1 ignores
    # SIGTERM): its veth and lease go when that stop is over.
    assert set(d.status()) == {"web"}
    wait_for(lambda: net.leases() == {"web": leases["web"]}, 30, lambda: str(net.leases()))
    assert not net.has_veth("kept")
    assert filtered(net.bridge) == {net.veth("web")}  # detached before its lease went
    assert not pid_alive(int(str(units["kept"]["pid"])))
    assert d.stop() == 0


def test_bad_static_addresses_fail_with_nothing_built(net: Net) -> None:
    d = net.daemon
    sleep = 'exec = ["/bin/sleep", "1000"]'
    net.write("owner", sleep, f'mode = "bridge"\naddress = "{net.prefix}10/24"')
    net.write("outside", sleep, 'mode = "bridge"\naddress = "10.202.99.10/24"')
    net.write("hostnet", sleep, 'mode = "host"')  # other modes unchanged beside bridge
    net.write("isolated", sleep, 'mode = "none"')
    d.start()
    d.wait_unit("owner", running, 60)
    for name in ("hostnet", "isolated"):
        d.wait_unit(name, running, 60)
    outside = d.wait_unit("outside", lambda u: u["state"] == "failed", 60)
    assert str(outside["last_exit"]).startswith("launch-error:network: "), outside
    assert "outside the daemon's subnet" in str(outside["last_exit"])
    net.write("taken", sleep, f'mode = "bridge"\naddress = "{net.prefix}10/24"')
    post(d, "/v1/reload")
    taken = d.wait_unit("taken", lambda u: u["state"] == "failed", 60)
    assert str(taken["last_exit"]).startswith("launch-error:network: "), taken
    assert "already leased to unit 'owner'" in str(taken["last_exit"])
    assert not net.has_veth("outside") and not net.has_veth("taken") and net.has_veth("owner")
    assert net.leases() == {"owner": f"{net.prefix}10"}
    assert len(d.leftover_pids()) == 3  # the running sandboxes' PID 1s, no half-built one
    assert d.stop() == 0


def test_status_shows_a_bridge_units_address_and_mac(net: Net) -> None:
    d = net.daemon
    # The service prints the MAC its eth0 really has, then waits.
    show = 'exec = ["/bin/sh", "-c", "cat /sys/class/net/eth0/address; exec sleep 1000"]'
    net.write("pinned", show, f'mode = "bridge"\naddress = "{net.prefix}20/24"')
    net.write("leased", show)
    net.write("isolated", 'exec = ["/bin/sleep", "1000"]', 'mode = "none"')
    d.start()
    for name in ("pinned", "leased", "isolated"):
        d.wait_unit(name, running, 60)
    wait_for(lambda: d.output("pinned") and d.output("leased"), 60)
    listed = d.status()
    for name in ("pinned", "leased"):
        detail = d.unit(name)
        assert detail["network"] == listed[name]["network"], "list and detail views agree"
        assert detail["network"] == {
            "mode": "bridge",
            "address": f"{net.leases()[name]}/24",
            "mac": d.output(name).strip(),  # what the kernel gave eth0
            "bridge": net.bridge,
            "gateway": f"{net.prefix}1",
            "outbound": True,
            "ports": [],
        }
    assert d.unit("pinned")["network"]["address"] == f"{net.prefix}20/24"
    assert listed["isolated"]["network"] == {"mode": "none"}
    env = {**os.environ, "SANDBOXD_SOCKET": str(d.socket), "NO_COLOR": "1"}
    shown = subprocess.run(
        [sys.executable, "-m", "supervisor.cli.main", "status", "pinned"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert (
        f"  network:      bridge {net.prefix}20/24 (mac {d.output('pinned').strip()}, "
        f"bridge {net.bridge}, gateway {net.prefix}1)\n" in shown.stdout
    ), shown
    # Stopped, the unit keeps its lease, and status still says which address is its.
    assert post(d, "/v1/units/pinned/stop")["state"] == "stopped"
    assert d.unit("pinned")["network"]["address"] == f"{net.prefix}20/24"
    assert d.stop() == 0


NS_GET_USERNS = 0xB701  # ioctl_ns(2): the user namespace that owns a namespace


def test_a_bridge_sandbox_net_namespace_is_owned_by_its_user_namespace(net: Net) -> None:
    # A default unit: its veth end was moved into a network namespace its own user namespace
    # owns (so its root may configure it), and the host still reaches its server.
    d = net.daemon
    net.server("web")
    d.start()
    pid = d.wait_unit("web", running, 60)["pid"]
    base = d.unit("web")["userns"].split("-")[0]
    status = Path(f"/proc/{pid}/status").read_text()
    assert status.split("Uid:")[1].split()[:4] == [base] * 4
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)
    finally:
        os.close(fd)
    try:
        assert os.fstat(owner).st_ino == os.stat(f"/proc/{pid}/ns/user").st_ino
        assert os.fstat(owner).st_ino != os.stat("/proc/self/ns/user").st_ino
    finally:
        os.close(owner)
    assert get(net.url("web")) == "hello from web\n"  # host -> sandbox
