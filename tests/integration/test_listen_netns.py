"""tcp/udp [[listen]] sockets of a sandbox with its own network (mode "none" or "bridge"): bound
in a network namespace the daemon holds for the unit across its runs (linux/heldnetns.py), so
no client is refused while the service is SIGKILLed and restarted, or while the daemon is
killed with kill -9 and started again; the host's namespace never has the port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_daemon_network import Net, net, post, sh
from test_listen import SERVER, free_port

from supervisor.linux.heldnetns import create, is_held
from tests.support.daemon_kit import Daemon, pid_alive, wait_for
from tests.support.requires import requires_root

__all__ = ["net"]  # the fixture, imported for the tests below
pytestmark = [pytest.mark.root, requires_root, pytest.mark.usefixtures("not_a_subreaper")]

# Answers each datagram with "got <payload> <pid>" and prints the payload.
UDP_SERVER = r"""
import os, socket
srv = socket.socket(fileno=3)
print("serving", os.environ["LISTEN_FDNAMES"], flush=True)
while True:
    data, peer = srv.recvfrom(512)
    print("received", data.decode(), flush=True)
    srv.sendto(b"got " + data + b" " + str(os.getpid()).encode(), peer)
"""


def netns_file(d: Daemon, unit: str) -> Path:
    return d.state / "netns" / unit


@pytest.fixture
def unmounts(daemon: Daemon) -> Iterator[None]:
    """Whatever a failed test left held is let go (the passing ones remove their units)."""
    yield
    if daemon.proc is not None and daemon.proc.poll() is None:
        daemon.stop()  # on_exit = "stop" lets them go too
    directory = daemon.state / "netns"
    left = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
    for name in left:
        subprocess.run(["umount", "-l", str(directory / name)], capture_output=True, check=False)
        (directory / name).unlink()
    assert left == [], f"held network namespaces left: {left}"


def web_unit(network: str, listen: str, server: str = SERVER, delay: str = "50ms") -> str:
    return f"""
[service]
exec = ["/usr/bin/python3", "-c", '''{server}''']
stop_timeout = "500ms"
[network]
{network}
[restart]
delay = "{delay}"
burst = 100
[[listen]]
{listen}
name = "web"
"""


def kill_service(d: Daemon, unit: str = "web") -> int:
    pid = int(d.unit(unit)["pid"])
    os.kill(pid, signal.SIGKILL)  # the sandbox this test's daemon started
    return pid


def socket_inode(pid: int) -> int:
    """The inode of the service's fd 3: the same socket across runs."""
    return os.stat(f"/proc/{pid}/fd/3").st_ino


def netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def link_index(ifname: str) -> int:
    return int(sh("ip", "-o", "link", "show", ifname).split(":")[0])


def request_at(host: str, port: int) -> str:
    while True:
        with socket.create_connection((host, port), timeout=60) as c:
            c.sendall(b"hi\n")
            try:
                answer = c.makefile().readline()
            except ConnectionResetError:
                continue  # accepted by the killed run, never answered: delayed, not refused
        if answer:
            return answer


def remove_and_check_gone(net: Net, unit: str) -> None:
    d = net.daemon
    d.remove_unit(unit)
    result = post(d, "/v1/reload")
    assert unit in result["stopped"] + result["removed"], result
    wait_for(lambda: not netns_file(d, unit).exists(), 60)
    wait_for(lambda: not net.has_veth(unit), 60)
    wait_for(lambda: [e["unit"] for e in d.events("unit.netns_dropped")] == [unit], 60)


def bridge_web(net: Net, published: int) -> str:
    network = f'mode = "bridge"\nports = ["127.0.0.1:{published}:8080"]'
    net.daemon.write_unit("web", web_unit(network, "tcp = 8080"))
    return network


@pytest.mark.usefixtures("unmounts")
def test_bridge_no_refusal_across_service_kills(net: Net) -> None:
    d, published = net.daemon, free_port()
    bridge_web(net, published)
    d.start()
    first = d.wait_unit("web", lambda u: u["state"] == "running", 60)
    address = net.leases()["web"]
    held = os.stat(netns_file(d, "web")).st_ino
    assert is_held(str(netns_file(d, "web"))) and netns_inode(int(first["pid"])) == held
    sock = socket_inode(int(first["pid"]))
    veth = link_index(net.veth("web"))
    killed = []
    for i in range(2000):
        if i in (500, 1000, 1500):
            killed.append(kill_service(d))
        # ConnectionRefusedError fails the test: to the sandbox, and through the published port.
        answer = request_at(address, 8080) if i % 2 else request_at("127.0.0.1", published)
        assert answer.startswith("ok ") and answer.split()[2] == "web", answer
    last = d.wait_unit("web", lambda u: u["state"] == "running" and u["restarts"] == 3, 60)
    assert first["pid"] == killed[0] and last["pid"] not in killed
    # The same namespace and the same socket in every run; the veth was never rebuilt.
    assert netns_inode(int(last["pid"])) == held and socket_inode(int(last["pid"])) == sock
    assert link_index(net.veth("web")) == veth
    assert d.output("web").count("serving 1 ['web']") == 4
    # The host's own namespace never had the port: only the published one answers there.
    with socket.socket() as c, pytest.raises(ConnectionRefusedError):
        c.connect(("127.0.0.1", 8080))
    remove_and_check_gone(net, "web")


@pytest.mark.usefixtures("unmounts")
def test_bridge_no_refusal_across_a_daemon_kill9(net: Net) -> None:
    d, published = net.daemon, free_port()
    bridge_web(net, published)
    d.start()
    first = d.wait_unit("web", lambda u: u["state"] == "running", 60)
    address = net.leases()["web"]
    held = os.stat(netns_file(d, "web")).st_ino
    sock = socket_inode(int(first["pid"]))
    for i in range(2000):
        if i == 500:
            d.wait_recorded()  # records land on the state writer thread
            d.kill9()  # the service keeps serving; the namespace stays mounted
        if i == 800:
            d.start()
            d.wait_unit("web", lambda u: u["state"] == "running")
        if i in (1000, 1500):
            kill_service(d)  # the new daemon holds the socket it took back
        answer = request_at(address, 8080) if i % 2 else request_at("127.0.0.1", published)
        assert answer.startswith("ok "), answer
    again = d.wait_unit("web", lambda u: u["state"] == "running" and u["restarts"] == 2, 60)
    assert again["pid"] != first["pid"]
    assert os.stat(netns_file(d, "web")).st_ino == held
    assert netns_inode(int(again["pid"])) == held and socket_inode(int(again["pid"])) == sock
    assert not d.events("unit.listen_lost")
    assert [e["unit"] for e in d.events("unit.adopted")] == ["web"]
    remove_and_check_gone(net, "web")


@pytest.mark.usefixtures("unmounts")
def test_udp_datagram_sent_during_a_restart_reaches_the_next_run(net: Net) -> None:
    d = net.daemon
    # A restart delay long enough to send while no run exists: the socket queues it.
    d.write_unit("dns", web_unit('mode = "bridge"', "udp = 5353", UDP_SERVER, delay="3s"))
    d.start()
    first = d.wait_unit("dns", lambda u: u["state"] == "running", 60)
    address = net.leases()["dns"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(60)
        c.sendto(b"one", (address, 5353))
        assert c.recvfrom(512)[0].split()[:2] == [b"got", b"one"]
        kill_service(d, "dns")
        d.wait_unit("dns", lambda u: u["state"] == "backoff", 60)
        assert not pid_alive(int(first["pid"]))
        c.sendto(b"two", (address, 5353))  # no service runs now
        reply = c.recvfrom(512)[0].split()  # answered by the next run
    assert reply[:2] == [b"got", b"two"]
    # Received by the next run: after its "serving" line, not the killed run's.
    wait_for(lambda: "received two" in d.output("dns"), 60)
    runs = d.output("dns").split("serving ")
    assert len(runs) == 3 and "received two" in runs[2] and "received one" in runs[1], runs
    remove_and_check_gone(net, "dns")


def sandboxctl(d: Daemon, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SANDBOXD_SOCKET": str(d.socket)}
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli.main", *argv],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


CONNECT = """
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30) as c:
    c.sendall(b"hi\\n")
    print(c.makefile().readline().strip())
"""


@pytest.mark.usefixtures("unmounts")
def test_mode_none_exec_inside_reaches_the_socket(daemon: Daemon) -> None:
    port = free_port()  # free on the host: its namespace must not get it
    daemon.write_unit("web", web_unit('mode = "none"', f'tcp = "127.0.0.1:{port}"'))
    daemon.start()
    first = daemon.wait_unit("web", lambda u: u["state"] == "running", 60)
    wait_for(lambda: "serving 1 ['web']" in daemon.output("web"), 60)
    out = sandboxctl(daemon, "exec", "web", "--", "/usr/bin/python3", "-c", CONNECT, str(port))
    assert out.returncode == 0 and out.stdout.split() == ["ok", "1", "web"], out  # PID 1: ours
    with socket.socket() as c, pytest.raises(ConnectionRefusedError):
        c.connect(("127.0.0.1", port))  # the host's namespace does not have it
    kill_service(daemon)
    again = daemon.wait_unit("web", lambda u: u["state"] == "running" and u["restarts"] == 1, 60)
    assert again["pid"] != first["pid"]
    out = sandboxctl(daemon, "exec", "web", "--", "/usr/bin/python3", "-c", CONNECT, str(port))
    assert out.returncode == 0 and out.stdout.split() == ["ok", "1", "web"], out
    daemon.remove_unit("web")
    assert "web" in post(daemon, "/v1/reload")["stopped"]
    wait_for(lambda: not netns_file(daemon, "web").exists(), 60)


@pytest.mark.usefixtures("unmounts")
def test_units_gone_while_no_daemon_ran_lose_their_netns(net: Net) -> None:
    d = net.daemon
    d.write_unit("gone", web_unit('mode = "bridge"', "tcp = 8080"))
    d.start()
    first = d.wait_unit("gone", lambda u: u["state"] == "running", 60)
    veth = net.veth("gone")
    d.wait_recorded()
    d.kill9()
    os.kill(int(first["pid"]), signal.SIGKILL)  # the sandbox this test's daemon started
    wait_for(lambda: not pid_alive(int(first["pid"])), 60)
    d.remove_unit("gone")
    assert is_held(str(netns_file(d, "gone"))) and net.has_veth("gone")
    # And one with neither a file nor a record (as after a crash between their removals).
    ghost = str(netns_file(d, "ghost"))
    create(ghost)
    d.start()
    # The record's unit goes at the first reload, the ghost at once, both with their veths.
    wait_for(lambda: not netns_file(d, "gone").exists() and not os.path.exists(ghost), 60)
    assert [e["unit"] for e in d.events("daemon.netns_orphan_dropped")] == ["ghost"]
    wait_for(lambda: [e["unit"] for e in d.events("unit.netns_dropped")] == ["gone"], 60)
    wait_for(lambda: f" {veth}@" not in sh("ip", "-o", "link"), 60)


def test_a_daemon_stop_lets_the_netns_go(net: Net) -> None:
    d = net.daemon
    d.write_unit("web", web_unit('mode = "bridge"', "tcp = 8080"))
    d.start()
    d.wait_unit("web", lambda u: u["state"] == "running", 60)
    assert netns_file(d, "web").exists()
    assert d.stop() == 0  # on_exit = "stop": the sockets die with the runs
    assert not netns_file(d, "web").exists() and not net.has_veth("web")


@pytest.mark.usefixtures("unmounts")
def test_a_changed_socket_gets_a_new_netns_and_none_without_one(net: Net) -> None:
    d = net.daemon
    d.write_unit("web", web_unit('mode = "bridge"', "tcp = 8080"))
    d.start()
    first = d.wait_unit("web", lambda u: u["state"] == "running", 60)
    veth = link_index(net.veth("web"))
    d.write_unit("web", web_unit('mode = "bridge"', "tcp = 8081"))
    assert post(d, "/v1/reload")["restarted"] == ["web"]
    second = d.wait_unit("web", lambda u: u["state"] == "running" and u["pid"] != first["pid"])
    # A new namespace (the kernel may give it the old one's inode number): the old one was
    # dropped, and the veth built anew in the new one.
    assert netns_inode(int(second["pid"])) == os.stat(netns_file(d, "web")).st_ino
    assert [e["unit"] for e in d.events("unit.netns_dropped")] == ["web"]
    assert link_index(net.veth("web")) != veth
    assert request_at(net.leases()["web"], 8081).startswith("ok ")
    # Without tcp/udp sockets: back to a new namespace per run, the held one let go.
    net.write("web", 'exec = ["/bin/sleep", "1000"]')
    assert post(d, "/v1/reload")["restarted"] == ["web"]
    d.wait_unit("web", lambda u: u["state"] == "running" and u["pid"] != second["pid"])
    assert not netns_file(d, "web").exists() and net.has_veth("web")
    wait_for(lambda: len(d.events("unit.netns_dropped")) == 2, 60)
    d.remove_unit("web")
    post(d, "/v1/reload")
    wait_for(lambda: not net.has_veth("web"), 60)


@pytest.mark.usefixtures("unmounts")
def test_a_user_namespace_sandbox_joins_the_daemons_netns(daemon: Daemon) -> None:
    """The held namespace belongs to the daemon's user namespace: joined before the sandbox's
    own is made; lo and ping_group_range were set by the daemon, and /sys is not mounted. The
    unit asks for nothing: its own user namespace is the default."""
    text = web_unit('mode = "none"', 'tcp = "127.0.0.1:9000"')
    daemon.write_unit("web", text)
    daemon.start()
    pid = daemon.wait_unit("web", lambda u: u["state"] == "running", 60)["pid"]
    assert os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")
    base = daemon.unit("web")["userns"].split("-")[0]
    assert Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0] == base
    wait_for(lambda: "serving 1 ['web']" in daemon.output("web"), 60)
    # Every group may ping (a user namespace reads the ends through its own mapping).
    held = sh("nsenter", f"--net={netns_file(daemon, 'web')}", "cat",
              "/proc/sys/net/ipv4/ping_group_range")  # fmt: skip
    assert held.split() == ["0", "2147483647"], held
    out = sandboxctl(daemon, "exec", "web", "--", "/usr/bin/python3", "-c", CONNECT, "9000")
    assert out.returncode == 0 and out.stdout.split() == ["ok", "1", "web"], out
    out = sandboxctl(daemon, "exec", "web", "--", "/bin/ls", "/sys")
    assert out.stdout.strip() == "", out
