"""Every feature of a default unit works inside its own user namespace (issue 27), each test
also checking that the sandbox really is one: root inside, the unit's base uid on the host.

Units here name no namespaces and no `user_namespace`: the default is what is under test.
Bridge networking in a user namespace is in test_daemon_network.py, a held network namespace
with [[listen]] in test_listen_netns.py, kill -9 and reload keeping the range in
test_userns.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.daemon_kit import Daemon
from tests.support.requires import requires_root
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.root, requires_root]

CTL = [sys.executable, "-m", "supervisor.cli.main"]
PYTHON = "/usr/bin/python3"


def ctl(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SANDBOXD_SOCKET": str(d.socket)}
    return subprocess.run(
        [*CTL, *args], env=env, text=True, capture_output=True, check=False, timeout=60
    )


def service(argv: list[str], **keys: object) -> str:
    text = f'[service]\nexec = {json.dumps(argv)}\nstop_timeout = "300ms"\n'
    return text + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())


def base_of(d: Daemon, name: str) -> int:
    shown = d.unit(name)["userns"]
    assert shown is not None, f"{name} has no user namespace"
    first, last = (int(x) for x in shown.split("-"))
    assert last - first + 1 == 65536
    return first


def host_uids(pid: int) -> list[str]:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]


def in_own_userns(d: Daemon, name: str, pid: int) -> None:
    """`pid` is root of the unit's user namespace: the unit's base uid, not 0, on the host."""
    assert os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")
    assert host_uids(pid) == [str(base_of(d, name))] * 4


@pytest.mark.cgroup_v2
def test_a_default_unit_is_root_of_its_own_user_and_cgroup_namespace(daemon: Daemon) -> None:
    script = "id -u; cat /proc/self/uid_map; grep '^0::' /proc/self/cgroup; exec sleep 1000"
    daemon.write_unit("plain", service(["/bin/sh", "-c", script]))
    daemon.start()
    unit = daemon.wait_unit("plain", lambda u: u["state"] == "running")
    in_own_userns(daemon, "plain", unit["pid"])
    base = base_of(daemon, "plain")
    wait_for(lambda: "0::" in daemon.output("plain"), 30, lambda: daemon.output("plain"))
    # Root inside, uid 0 mapped to the base; the cgroup namespace hides the cgroup's path.
    assert daemon.output("plain").split() == ["0", "0", str(base), "65536", "0::/"]
    shown = ctl(daemon, "status", "plain")
    assert [line.split() for line in shown.stdout.splitlines() if "userns:" in line] == [
        ["userns:", f"{base}-{base + 65535}"]
    ], shown
    as_json = json.loads(ctl(daemon, "status", "plain", "--json").stdout)
    assert [u["userns"] for u in as_json["units"]] == [f"{base}-{base + 65535}"]
    # exec enters the same user namespace as PID 1, as its root.
    user_ns = os.readlink(f"/proc/{unit['pid']}/ns/user")
    seen = ctl(daemon, "exec", "plain", "--", "/bin/sh", "-c", "id -u; readlink /proc/self/ns/user")
    assert seen.returncode == 0 and seen.stdout.split() == ["0", user_ns], seen


@pytest.mark.cgroup_v2
def test_an_oom_killed_unit_in_its_user_namespace_restarts(daemon: Daemon) -> None:
    # The first run eats past memory_max; the next one finds the marker and stays up.
    # A host directory the sandbox's root (an unprivileged uid on the host) reaches and writes.
    state = Path(tempfile.mkdtemp(prefix="sbx-userns-oom-"))
    state.chmod(0o777)
    try:
        _oom_restarts(daemon, state)
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()  # nothing holds the directory any more
        shutil.rmtree(state)


def _oom_restarts(daemon: Daemon, state: Path) -> None:
    hog = "import os; os.path.exists('/state/ran') or (open('/state/ran', 'w'), b'1' * (200 << 20))"
    text = service([PYTHON, "-c", hog + "; import time; time.sleep(1000)"])
    text += '[resources]\nmemory_max = "48M"\nswap_max = "0"\n[restart]\ndelay = "100ms"\n'
    text += (
        f'[sandbox]\nmounts = [{{ source = "{state}", target = "/state", read_only = false }}]\n'
    )
    daemon.write_unit("hog", text)
    daemon.start()
    unit = daemon.wait_unit("hog", lambda u: u["restarts"] >= 1 and u["state"] == "running", 60)
    assert unit["last_exit"] == "oom-killed" and unit["oom_kills"] >= 1, unit
    in_own_userns(daemon, "hog", unit["pid"])
    # The marker is the sandbox root's file: the unit's base uid on the host.
    assert (state / "ran").stat().st_uid == base_of(daemon, "hog")


@pytest.mark.cgroup_v2
def test_an_exec_probe_runs_in_the_units_user_namespace(daemon: Daemon) -> None:
    probe = ["/bin/sh", "-c", "id -u; cat /proc/self/uid_map"]
    text = service(["/bin/sleep", "1000"])
    text += "[health]\nexec = " + json.dumps(probe) + '\ninterval = "200ms"\ntimeout = "10s"\n'
    text += 'start_period = "30s"\n'
    daemon.write_unit("checked", text)
    daemon.start()
    unit = daemon.wait_unit("checked", lambda u: u["health"] == "healthy", 60)
    in_own_userns(daemon, "checked", unit["pid"])
    output = daemon.unit("checked")["health_output"]
    assert output.split() == ["0", "0", str(base_of(daemon, "checked")), "65536"], output


SERVER = """
import os, socket
names = os.environ["LISTEN_FDNAMES"].split(":")
for fd, name in enumerate(names, 3):
    s = socket.socket(fileno=fd)
    s.setblocking(True)
    c, _ = s.accept()
    c.sendall(f"{name} {os.getuid()}".encode())
    c.close()
import time; time.sleep(1000)
"""


def test_listen_sockets_reach_a_service_in_its_user_namespace(daemon: Daemon) -> None:
    path = daemon.base / "web.sock"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = service([PYTHON, "-c", SERVER])
    text += f'[network]\nmode = "host"\n[[listen]]\nunix = "{path}"\nname = "ctl"\n'
    text += f'[[listen]]\ntcp = "127.0.0.1:{port}"\nname = "web"\n'
    daemon.write_unit("sock", text)
    daemon.start()
    unit = daemon.wait_unit("sock", lambda u: u["state"] == "running")
    in_own_userns(daemon, "sock", unit["pid"])
    # The daemon made both sockets; the service, root of its namespace, accepts on each.
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(30)
        client.connect(str(path))
        assert client.recv(64) == b"ctl 0"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        assert client.recv(64) == b"web 0"


def test_sd_notify_from_a_service_in_its_user_namespace(daemon: Daemon) -> None:
    # The datagram's SCM_CREDENTIALS reach the daemon as host-view ids (the base uid, the
    # host pid); the daemon checks the pid against the unit's cgroup and takes READY=1.
    script = "systemd-notify --ready --status='ready in userns'; exec sleep 1000"
    daemon.write_unit("ready", service(["/bin/sh", "-c", script], ready="notify"))
    daemon.start()
    unit = daemon.wait_unit("ready", lambda u: u["state"] == "running", 60)
    in_own_userns(daemon, "ready", unit["pid"])
    assert daemon.unit("ready")["notify_status"] == "ready in userns"


FORKER = """
import os, signal, time
kids = []
try:
    for _ in range(20):
        pid = os.fork()
        if pid == 0:
            time.sleep(1000)
            os._exit(0)
        kids.append(pid)
    print("never refused")
except BlockingIOError:
    print("refused after", len(kids))
for kid in kids:
    os.kill(kid, signal.SIGKILL)
    os.waitpid(kid, 0)
"""


@pytest.mark.cgroup_v2
def test_cgroup_limits_apply_to_a_unit_in_its_user_namespace(daemon: Daemon) -> None:
    text = service(["/bin/sleep", "1000"]) + "[resources]\npids_max = 7\n"
    daemon.write_unit("limited", text)
    daemon.start()
    unit = daemon.wait_unit("limited", lambda u: u["state"] == "running")
    in_own_userns(daemon, "limited", unit["pid"])
    limit = daemon.cgroup_file("limited", "pids.max")
    assert limit.read_text().strip() == "7"
    # Forks past the limit are refused: it holds for the namespace's root too.
    ran = ctl(daemon, "exec", "limited", "--", PYTHON, "-c", FORKER)
    assert ran.returncode == 0 and ran.stdout.startswith("refused after "), ran
    assert int(ran.stdout.split()[-1]) < 7, ran
    assert limit.read_text().strip() == "7"
