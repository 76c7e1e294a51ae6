"""[[listen]] socket activation through a real daemon: the service serves on the daemon's
sockets (LISTEN_FDS), and no client is refused while it is SIGKILLed and restarted, or while
the daemon itself is killed and started again."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon_kit import Daemon
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root, pytest.mark.usefixtures("not_a_subreaper")]

# A minimal sd_listen_fds(3) server: checks LISTEN_PID, takes fd 3, answers each line with
# "ok <pid>" and the names it was given.
SERVER = r"""
import os, socket
assert os.environ["LISTEN_PID"] == str(os.getpid()), os.environ.get("LISTEN_PID")
n = int(os.environ["LISTEN_FDS"])
names = os.environ["LISTEN_FDNAMES"].split(":")
srv = socket.socket(fileno=3)
print("serving", n, names, flush=True)
while True:
    conn, _ = srv.accept()
    with conn:
        conn.makefile().readline()
        conn.sendall(f"ok {os.getpid()} {names[0]}\n".encode())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unit(port: int) -> str:
    return f"""
[service]
exec = ["/usr/bin/python3", "-c", '''{SERVER}''']
stop_timeout = "500ms"
[network]
mode = "host"
[restart]
delay = "50ms"
burst = 100
[[listen]]
tcp = "127.0.0.1:{port}"
name = "web"
"""


def request(port: int) -> str:
    """One request; a connection the kernel refused raises ConnectionRefusedError. One the
    killed service had accepted but not answered is retried: delayed, not refused."""
    while True:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
            c.sendall(b"hi\n")
            try:
                answer = c.makefile().readline()
            except ConnectionResetError:
                continue
        if answer:
            return answer


def kill_service(daemon: Daemon) -> int:
    pid = int(daemon.unit("web")["pid"])
    os.kill(pid, signal.SIGKILL)  # the sandbox this test's daemon started
    return pid


def test_no_connection_refused_across_service_kills(daemon: Daemon) -> None:
    port = free_port()
    daemon.write_unit("web", unit(port))
    daemon.start()
    first = daemon.wait_unit("web", lambda u: u["state"] == "running")
    served_by: set[str] = set()
    killed = []
    for i in range(2000):
        if i in (500, 1000, 1500):
            killed.append(kill_service(daemon))
        answer = request(port)  # ConnectionRefusedError fails the test
        assert answer.startswith("ok ") and answer.split()[2] == "web", answer
        served_by.add(answer.split()[1])
    status = daemon.wait_unit("web", lambda u: u["state"] == "running" and u["restarts"] == 3)
    assert status["pid"] not in killed and first["pid"] == killed[0]
    assert daemon.output("web").count("serving 1 ['web']") == 4


def test_no_connection_refused_across_a_daemon_kill9(daemon: Daemon) -> None:
    port = free_port()
    daemon.write_unit("web", unit(port))
    daemon.start()
    first = daemon.wait_unit("web", lambda u: u["state"] == "running")
    for i in range(2000):
        if i == 500:
            daemon.wait_recorded()  # records land on the state writer thread
            daemon.kill9()  # the service keeps serving on its own copy
        if i == 800:
            daemon.start()
            daemon.wait_unit("web", lambda u: u["state"] == "running")
        if i in (1000, 1500):
            kill_service(daemon)  # the new daemon holds the socket it took back
        answer = request(port)
        assert answer.startswith("ok "), answer
    again = daemon.wait_unit("web", lambda u: u["state"] == "running" and u["restarts"] == 2)
    assert again["pid"] != first["pid"]
    assert not daemon.events("unit.listen_lost")
    assert [e["unit"] for e in daemon.events("unit.adopted")] == ["web"]


def test_a_unix_socket_with_mode_in_a_sandbox_of_its_own(daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "web.sock"
    daemon.write_unit(
        "web",
        f"""
[service]
exec = ["/usr/bin/python3", "-c", '''{SERVER}''']
stop_timeout = "500ms"
[[listen]]
unix = "{path}"
mode = 0o600
""",
    )
    daemon.start()
    daemon.wait_unit("web", lambda u: u["state"] == "running")
    assert os.stat(path).st_mode & 0o777 == 0o600
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(str(path))
        c.sendall(b"hi\n")
        assert c.makefile().readline().split()[2] == "unix"


def test_a_port_in_use_is_launch_error_listen(daemon: Daemon) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        daemon.write_unit("web", unit(taken.getsockname()[1]))
        daemon.start()
        failed = daemon.wait_unit("web", lambda u: u["state"] == "failed")
    assert failed["last_exit"].startswith("launch-error:listen: tcp 127.0.0.1:"), failed


def test_a_unit_of_its_own_network_may_have_inet_sockets(tmp_path: Path) -> None:
    good = tmp_path / "web.toml"
    good.write_text('[service]\nexec = ["/bin/true"]\n[[listen]]\ntcp = 80\n[[listen]]\nudp = 53\n')
    out = subprocess.run(
        [sys.executable, "-m", "supervisor.cli.main", "validate", str(good)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out  # held in a network namespace of its own (test_listen_netns)


def test_dbus_daemon_serves_on_a_socket_it_was_given(daemon: Daemon, tmp_path: Path) -> None:
    """A real program with systemd socket activation (`--address=systemd:`, sd_listen_fds)."""
    if shutil.which("dbus-daemon") is None or shutil.which("dbus-send") is None:
        pytest.skip("needs dbus-daemon and dbus-send")
    path = tmp_path / "bus.sock"
    daemon.write_unit(
        "bus",
        f"""
[service]
exec = ["/usr/bin/dbus-daemon", "--session", "--nofork", "--nopidfile", "--address=systemd:"]
stop_timeout = "2s"
[[listen]]
unix = "{path}"
mode = 0o600
[sandbox]
# Host ids: the host's client authenticates (SASL EXTERNAL) with the uid it has on the host,
# which a bus in a user namespace of its own sees as another (or no) uid, so it never lets a
# host client in, whatever the socket. Socket activation into a user namespace is
# test_userns_features.py's.
user_namespace = "host"
""",
    )
    daemon.start()
    daemon.wait_unit("bus", lambda u: u["state"] == "running")
    out = subprocess.run(
        ["dbus-send", f"--bus=unix:path={path}", "--print-reply",
         "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus.ListNames"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0 and "org.freedesktop.DBus" in out.stdout, out


def test_tini_passes_the_sockets_on(daemon: Daemon, tmp_path: Path) -> None:
    if not any(shutil.which(n) for n in ("tini", "tini-static")):
        pytest.skip("needs tini")
    path = tmp_path / "web.sock"
    daemon.write_unit(
        "web",
        f"""
[service]
exec = ["/usr/bin/python3", "-c", '''{SERVER}''']
stop_timeout = "500ms"
[sandbox]
init = true
[[listen]]
unix = "{path}"
""",
    )
    daemon.start()
    daemon.wait_unit("web", lambda u: u["state"] == "running")
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(str(path))
        c.sendall(b"hi\n")
        assert c.makefile().readline().split()[:2] == ["ok", "2"]  # the service is PID 2
