"""`[health]` end to end: probes of each kind against real servers in real sandboxes.

Servers are SIGSTOPped from the host to make them hang: the probes then time out, the unit
becomes `unhealthy` after `retries` failures, and is restarted through its restart policy
(last exit `unhealthy`). Exec probes run inside the sandbox (uid, namespaces) and a hung one is
killed with its whole process tree; 1000 probe runs leave the daemon's fd count flat.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon_kit import Daemon, pid_alive, wait_for
from tests.support.requires import CGROUP_ROOT, cgroup_version, requires_root

pytestmark = [pytest.mark.root, requires_root]

# A TCP server that accepts nothing once stopped: backlog 1, so the queue fills at once.
TCP_SERVER = """
import socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 7000))
s.listen(1)
while True:
    c, _ = s.accept()
    c.close()
"""
# start_period: failures before the first success do not count, so a server slow to start on
# a loaded machine is not restarted before it ever listened.
FAST = {"interval": "200ms", "timeout": "300ms", "retries": 3, "start_period": "30s"}


def unit(argv: list[str], health: dict[str, Any], restart_delay: str = "1500ms",
         **service: object) -> str:  # fmt: skip
    text = f'[service]\nexec = {json.dumps(argv)}\nstop_timeout = "300ms"\n'
    text += 'stop_signal = "SIGINT"\n'
    text += "".join(f"{k} = {json.dumps(v)}\n" for k, v in service.items())
    text += f'[restart]\ndelay = "{restart_delay}"\n[health]\n'
    return text + "".join(f"{k} = {json.dumps(v)}\n" for k, v in health.items())


def unit_pids(daemon: Daemon, name: str) -> list[int]:
    """Every process in the unit's cgroup and below it (probe sub-cgroups included)."""
    if cgroup_version() == 2:
        base = Path(CGROUP_ROOT) / daemon.cgroup_parent / name
    else:
        base = Path(CGROUP_ROOT) / "memory" / daemon.cgroup_parent / name
    pids: set[int] = set()
    for procs in base.rglob("cgroup.procs"):
        pids.update(int(p) for p in procs.read_text().split())
    return sorted(pids)


def hang_and_restart(daemon: Daemon, name: str) -> None:
    """SIGSTOP the healthy server; expect unhealthy, then a restart that is healthy again."""
    before = daemon.wait_unit(name, lambda u: u["health"] == "healthy", 30)
    os.kill(before["pid"], signal.SIGSTOP)
    sick = daemon.wait_unit(name, lambda u: u["health"] == "unhealthy", 30)
    assert sick["state"] in ("stopping", "backoff"), sick
    detail = daemon.unit(name)
    assert detail["health_failures"] == 3 and detail["health_last_ok"] is False
    assert detail["health_output"], detail
    after = daemon.wait_unit(name, lambda u: u["health"] == "healthy" and u["restarts"] == 1, 30)
    assert after["last_exit"] == "unhealthy" and after["pid"] != before["pid"]
    assert not pid_alive(before["pid"])
    (unhealthy,) = [e for e in daemon.events("unit.unhealthy") if e["unit"] == name]
    assert unhealthy["health_failures"] == 3
    backoffs = [e["reason"] for e in daemon.events("unit.backoff") if e["unit"] == name]
    assert backoffs == ["unhealthy"]


def test_tcp_probe_healthy_then_hung_server_restarted(daemon: Daemon) -> None:
    daemon.write_unit("tcp", unit(["/usr/bin/python3", "-c", TCP_SERVER], {"tcp": 7000, **FAST}))
    daemon.start()
    healthy = daemon.wait_unit("tcp", lambda u: u["health"] == "healthy", 30)
    assert healthy["state"] == "running"
    assert daemon.unit("tcp")["health_output"] == "tcp 127.0.0.1:7000: connected"
    ctl = [str(Path(sys.executable).parent / "sandboxctl"), "status", "--json"]
    env = {**os.environ, "SANDBOXD_SOCKET": str(daemon.socket)}
    listed = json.loads(subprocess.run(ctl, env=env, capture_output=True, check=True).stdout)
    assert [u["health"] for u in listed["units"]] == ["healthy"]
    one = json.loads(subprocess.run([*ctl[:2], "tcp", "--json"], env=env, capture_output=True,
                                    check=True).stdout)  # fmt: skip
    one = one["units"][0] if "units" in one else one
    assert one["health"] == "healthy" and one["health_failures"] == 0
    hang_and_restart(daemon, "tcp")


def test_http_probe_against_http_server(daemon: Daemon) -> None:
    server = ["/usr/bin/python3", "-m", "http.server", "8080", "--bind", "127.0.0.1",
              "--directory", "/usr/share/doc"]  # fmt: skip
    daemon.write_unit("web", unit(server, {"http": "http://127.0.0.1:8080/", **FAST}))
    daemon.write_unit(
        "missing", unit(server, {"http": "http://localhost:8080/nope", **FAST, "start_period": "0"})
    )
    daemon.start()
    daemon.wait_unit("web", lambda u: u["health"] == "healthy", 30)
    assert daemon.unit("web")["health_output"].startswith("HTTP/1.0 200 OK")
    # A 404 is unhealthy: restarted with the backoff too.
    wait_for(lambda: "404" in (daemon.unit("missing").get("health_output") or ""), 30)
    daemon.wait_unit("missing", lambda u: u["last_exit"] == "unhealthy", 30)
    daemon.remove_unit("missing")
    daemon.signal(signal.SIGHUP)
    daemon.wait_unit("web", lambda u: "missing" not in daemon.status(), 60)
    hang_and_restart(daemon, "web")


def test_http_probe_server_not_reachable_from_host(daemon: Daemon) -> None:
    """The probe really runs in the sandbox's netns: the host has no listener on the port."""
    server = ["/usr/bin/python3", "-m", "http.server", "18089", "--bind", "127.0.0.1"]
    daemon.write_unit("inside", unit(server, {"http": "http://127.0.0.1:18089/", **FAST},
                                     workdir="/usr/share/doc"))  # fmt: skip
    daemon.start()
    daemon.wait_unit("inside", lambda u: u["health"] == "healthy", 30)
    connect = "import socket; socket.create_connection(('127.0.0.1', 18089), 1)"
    probe = subprocess.run(["/usr/bin/python3", "-c", connect], capture_output=True, check=False)
    assert probe.returncode != 0  # refused on the host's loopback


# The exec tests run in the cgroup v2 VM too (probe sub-cgroups, cgroup.kill): its software
# emulation makes a probe take ~1 s, hence the longer timeouts than FAST.
@pytest.mark.cgroup_v2
def test_exec_probe_runs_inside_as_the_unit_user(daemon: Daemon) -> None:
    service = ["/bin/sh", "-c", "echo up > /tmp/state; trap 'exit 0' INT; sleep 1000 & wait"]
    probe = ["/bin/sh", "-c", 'cat /tmp/state; id -u; hostname; test "$(cat /tmp/state)" = up']
    health = {"exec": probe, **FAST, "timeout": "10s"}
    daemon.write_unit("ex", unit(service, health, user=65534, group=65534))
    daemon.start()
    ex = daemon.wait_unit("ex", lambda u: u["health"] == "healthy", 60)
    output = daemon.unit("ex")["health_output"]
    assert output.split() == ["up", "65534", "ex"], output
    # No probe process is left behind between runs; the service is alone in its cgroup.
    wait_for(lambda: len(unit_pids(daemon, "ex")) == 2, 10, lambda: str(unit_pids(daemon, "ex")))
    assert ex["state"] == "running"


@pytest.mark.cgroup_v2
def test_exec_probe_hanging_past_timeout_is_killed_with_its_tree(daemon: Daemon) -> None:
    service = ["/bin/sh", "-c", "trap 'exit 0' INT; sleep 1000 & wait"]
    # Background children (one escaping with setsid), then hang: all must die at the timeout.
    probe = ["/bin/sh", "-c", "sleep 1001 & setsid sleep 1002 & echo probing; exec sleep 1003"]
    health = {"exec": probe, "interval": "300ms", "timeout": "3s", "retries": 2}
    daemon.write_unit("hang", unit(service, health, restart_delay="5s"))
    daemon.start()
    daemon.wait_unit("hang", lambda u: u["health"] == "unhealthy", 60)
    detail = daemon.unit("hang")
    assert "timed out after 3s" in detail["health_output"]
    assert "probing" in detail["health_output"]
    daemon.wait_unit("hang", lambda u: u["state"] == "backoff", 20)
    sleepers = subprocess.run(["pgrep", "-f", "^sleep 100[123]$"], capture_output=True, text=True,
                              check=False)  # fmt: skip
    assert sleepers.stdout.split() == [], sleepers.stdout
    assert unit_pids(daemon, "hang") == []


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _ppid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def _probe_procs(daemon: Daemon, name: str) -> list[int]:
    if cgroup_version() == 2:
        base = Path(CGROUP_ROOT) / daemon.cgroup_parent / name
    else:
        base = Path(CGROUP_ROOT) / "memory" / daemon.cgroup_parent / name
    procs = base / "sandboxd-probe" / "cgroup.procs"
    return [int(p) for p in procs.read_text().split()] if procs.exists() else []


@pytest.mark.cgroup_v2
def test_exec_probe_is_run_by_the_fork_server_and_survives_its_death(daemon: Daemon) -> None:
    service = ["/bin/sh", "-c", "trap 'exit 0' INT; sleep 1000 & wait"]
    # The first probe hangs; every later one answers at once.
    probe = ["/bin/sh", "-c", "if [ ! -e /tmp/hung ]; then touch /tmp/hung; exec sleep 1004; fi;"
             " echo fine"]  # fmt: skip
    health = {"exec": probe, "interval": "300ms", "timeout": "60s", "retries": 3}
    daemon.write_unit("fs", unit(service, health))
    daemon.start()
    assert daemon.proc is not None

    def hanging() -> list[int]:  # the first probe once it is `sleep`, past its `touch`
        return [p for p in _probe_procs(daemon, "fs") if _cmdline(p) == b"sleep\x001004\x00"]

    wait_for(lambda: len(hanging()) == 1, 60)
    (command,) = hanging()
    # The daemon forks nothing for a probe: its fork server is the command's parent.
    server = _ppid(command)
    assert server != daemon.proc.pid and _ppid(server) == daemon.proc.pid
    assert b"supervisor.sandbox.server\x00" in _cmdline(server)
    os.kill(server, signal.SIGKILL)  # the daemon's fork server, started by this test's daemon
    detail = daemon.wait_unit("fs", lambda u: u["health"] == "healthy", 60)
    assert detail["state"] == "running" and detail["restarts"] == 0
    assert "fine" in daemon.unit("fs")["health_output"]
    # The orphaned command (re-parented to the daemon) was killed and reaped.
    wait_for(lambda: not pid_alive(command), 60)
    wait_for(lambda: _zombies(daemon.proc.pid) == [], 10, lambda: str((command, server)))
    assert [e["unit"] for e in daemon.events("health.probe_server_lost")] == ["fs"]


def _fd_targets(pid: int) -> dict[str, str]:
    targets = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            targets[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
    return targets


def _settled_fds(pid: int) -> dict[str, str]:
    """The daemon's fds once nothing is in flight (the same set twice, 0.2 s apart)."""
    seen: dict[str, str] = {}
    for _ in range(50):
        now = _fd_targets(pid)
        if now == seen:
            return now
        seen = now
        time.sleep(0.2)
    return seen


def _stop_all(daemon: Daemon, names: str) -> None:
    for name in names:
        code, body = daemon.request("POST", f"/v1/units/{name}/stop")
        assert code == 200, body
    for name in names:
        daemon.wait_unit(name, lambda u: u["state"] == "stopped", 30)


def _start_all(daemon: Daemon, names: str) -> None:
    for name in names:
        code, body = daemon.request("POST", f"/v1/units/{name}/start")
        assert code == 200, body


def _zombies(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if stat[0] == "Z" and int(stat[1]) == pid:
                found.append(int(entry))
    return found


def test_soak_1000_probe_runs_keep_fds_flat(daemon: Daemon) -> None:
    fast = {"interval": "10ms", "timeout": "1s", "retries": 1000}
    daemon.write_unit("e", unit(["/bin/sh", "-c", "trap 'exit 0' INT; sleep 1000 & wait"],
                                {"exec": ["/bin/true"], **fast}))  # fmt: skip
    daemon.write_unit("t", unit(["/usr/bin/python3", "-c", TCP_SERVER], {"tcp": 7000, **fast}))
    daemon.write_unit("f", unit(["/bin/sh", "-c", "trap 'exit 0' INT; sleep 1000 & wait"],
                                {"tcp": 9, **fast, "start_period": "1h"}))  # fmt: skip
    daemon.start()
    assert daemon.proc is not None
    pid = daemon.proc.pid

    def probes(name: str) -> int:
        return int(daemon.unit(name).get("health_probes") or 0)

    # Probes run back to back (interval 10ms), so one is nearly always in flight: compare the
    # daemon's fds with every unit stopped, after 50 probes each and after 1000 more.
    wait_for(lambda: min(probes("e"), probes("t")) >= 50, 60)
    _stop_all(daemon, "etf")
    baseline = _settled_fds(pid)
    done = {name: probes(name) for name in "etf"}
    _start_all(daemon, "etf")
    wait_for(lambda: all(probes(n) >= done[n] + 1000 for n in "etf"), 300,
             lambda: str({n: probes(n) - done[n] for n in "etf"}))  # fmt: skip
    _stop_all(daemon, "etf")
    after = _settled_fds(pid)
    assert len(after) <= len(baseline), (baseline, after)
    assert _zombies(pid) == []
    assert all(daemon.status()[n]["restarts"] == 0 for n in "etf")
