"""sandboxctl as a user runs it (a subprocess) against a real daemon with real sandboxes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.requires import requires_root
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from daemon_kit import Daemon

pytestmark = [pytest.mark.root, requires_root]

TICKER = """
[service]
exec = ["/bin/sh", "-c", "echo started; while true; do echo tick; sleep 0.2; done"]
user = "nobody"
stop_timeout = "500ms"
[resources]
memory_max = "64M"
pids_max = 64
"""
SLEEPER = """
[service]
exec = ["/bin/sleep", "1000"]
autostart = false
stop_timeout = "500ms"
"""


def sandboxctl(
    d: Daemon, *argv: str, timeout: float = 60, socket: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SANDBOXD_SOCKET": str(socket or d.socket)}
    env.pop("TERM", None)
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli.main", *argv],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture
def running(daemon: Daemon) -> Daemon:
    daemon.write_unit("web", TICKER)
    daemon.write_unit("idle", SLEEPER)
    daemon.start()
    daemon.wait_unit("web", lambda u: u["state"] == "running")
    return daemon


def test_status_table_json_and_exit_codes(running: Daemon) -> None:
    result = sandboxctl(running, "status")
    assert result.returncode == 0, result
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["UNIT", "STATE", "PID", "UPTIME", "RESTARTS", "MEMORY", "LAST-EXIT"]
    assert [r.split()[:2] for r in rows] == [["idle", "stopped"], ["web", "running"]]
    units = json.loads(sandboxctl(running, "status", "--json").stdout)["units"]
    web = next(u for u in units if u["name"] == "web")
    assert web["state"] == "running" and web["pid"] > 0 and web["health"] is None
    assert sandboxctl(running, "status", "web").returncode == 0
    assert sandboxctl(running, "status", "idle").returncode == 3
    missing = sandboxctl(running, "status", "ghost")
    assert (missing.returncode, missing.stderr) == (4, "sandboxctl: no such unit: ghost\n")
    detail = sandboxctl(running, "status", "web").stdout
    assert "limits:" in detail and "memory_max=64M" in detail and "pids_max=64" in detail
    assert "usage:" in detail and "oom kills:    0" in detail and "recent events:" in detail


def test_start_stop_restart_reload(running: Daemon) -> None:
    assert sandboxctl(running, "start", "idle").stdout == "idle: running\n"
    assert sandboxctl(running, "stop", "idle", "web").stdout == "idle: stopped\nweb: stopped\n"
    assert sandboxctl(running, "restart", "web").returncode == 0
    assert sandboxctl(running, "stop", "ghost").returncode == 4
    running.write_unit("bad", "[service]\nexce = ['/bin/true']\n")
    running.write_unit("new", SLEEPER.replace("autostart = false", "autostart = true"))
    result = sandboxctl(running, "reload")
    assert result.returncode == 1, result
    assert "started: new" in result.stdout and "invalid: bad" in result.stdout
    assert "exce" in result.stdout  # the error line names the key


def test_logs_and_follow_across_a_restart(running: Daemon) -> None:
    wait_for(lambda: "tick" in sandboxctl(running, "logs", "web", "-n", "1").stdout, 60)
    assert sandboxctl(running, "logs", "web").stdout.startswith("started\n")
    env = {**os.environ, "SANDBOXD_SOCKET": str(running.socket)}
    follow = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli.main", "logs", "web", "-n", "0", "-f"],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        assert follow.stdout.readline() == "tick\n"
        assert sandboxctl(running, "restart", "web").returncode == 0
        deadline = time.monotonic() + 20
        while (line := follow.stdout.readline()) != "started\n":
            assert line and time.monotonic() < deadline, line
        assert follow.stdout.readline() == "tick\n"
    finally:
        follow.kill()
        follow.wait()


def test_exec_enters_the_sandbox(running: Daemon) -> None:
    web = running.unit("web")
    script = (
        "id -u; id -g; hostname; grep -E '^(CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; "
        "echo $$ > /dev/null; readlink /proc/1/exe; exit 7"
    )
    result = sandboxctl(running, "exec", "web", "--", "/bin/sh", "-c", script)
    assert result.returncode == 7, result
    lines = result.stdout.splitlines()
    assert lines[:3] == ["65534", "65534", "web"]
    ours = {k: v.strip() for k, v in (line.split(":", 1) for line in lines[3:6])}
    with open(f"/proc/{web['pid']}/status") as f:
        theirs = {k: v.strip() for k, v in (line.split(":", 1) for line in f if ":" in line)}
    for key in ("CapBnd", "NoNewPrivs", "Seccomp"):
        assert ours[key] == theirs[key], key
    assert ours["Seccomp"] == "2" and ours["NoNewPrivs"] == "1"
    assert lines[6] in ("/bin/sh", "/usr/bin/dash", "/bin/dash")  # PID 1 here is the service


def test_exec_runs_in_the_unit_cgroup(running: Daemon) -> None:
    env = {**os.environ, "SANDBOXD_SOCKET": str(running.socket)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli.main", "exec", "web", "--", "/bin/sh", "-c",
         "echo ready; exec sleep 30"],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        procs = running.cgroup_file("web", "pids.current").with_name("cgroup.procs")
        members = [int(p) for p in procs.read_text().split()]
        sleepers = [p for p in members if Path(f"/proc/{p}/comm").read_text().strip() == "sleep"]
        assert sleepers, members
        assert proc.pid not in members  # the CLI itself stays out of the unit's limits
    finally:
        proc.kill()
        proc.wait()


def test_exec_errors(running: Daemon) -> None:
    assert sandboxctl(running, "exec", "web", "--", "no-such-command").returncode == 127
    assert sandboxctl(running, "exec", "idle", "--", "true").returncode == 3
    assert sandboxctl(running, "exec", "ghost", "--", "true").returncode == 4
    assert sandboxctl(running, "exec", "web").returncode == 2


def test_unreachable_daemon(running: Daemon) -> None:
    running.stop()
    for argv in (("status",), ("reload",), ("exec", "web", "--", "true")):
        result = sandboxctl(running, *argv)
        assert result.returncode == 5, (argv, result)
        assert result.stderr.startswith(f"sandboxctl: cannot reach sandboxd at {running.socket}: ")
        assert result.stderr.count("\n") == 1


def test_logs_without_the_daemon_are_the_daemons(running: Daemon) -> None:
    wait_for(lambda: "tick" in sandboxctl(running, "logs", "web", "-n", "1").stdout, 60)
    stopped = json.loads(sandboxctl(running, "stop", "web", "--json").stdout)["units"]
    assert [(u["name"], u["ok"], u["state"]) for u in stopped] == [("web", True, "stopped")]
    views = [(), ("-n", "3"), ("--json",)]
    through = {argv: sandboxctl(running, "logs", "web", *argv) for argv in views}
    assert all(r.returncode == 0 and r.stderr == "" for r in through.values()), through
    assert running.stop() == 0
    paths = ("--config", str(running.config), "--log-dir", str(running.logs))
    for argv in views:
        direct = sandboxctl(running, "logs", "web", *argv, *paths)
        assert (direct.returncode, direct.stdout) == (0, through[argv].stdout), argv
        assert direct.stderr == (
            f"sandboxctl: cannot reach sandboxd at {running.socket}: no such socket (is sandboxd "
            f"running?); reading the log files in {running.logs} directly\n"
        )
    assert sandboxctl(running, "logs", "ghost", *paths).returncode == 4


def test_exec_into_a_user_namespace(daemon: Daemon) -> None:
    daemon.write_unit(
        "userns",
        TICKER
        + '[sandbox]\nnamespaces = ["pid", "mount", "uts", "ipc", "net", "cgroup", "user"]\n',
    )
    daemon.start()
    pid = daemon.wait_unit("userns", lambda u: u["state"] == "running")["pid"]
    with open(f"/proc/{pid}/status") as f:
        host_uid = next(line.split()[2] for line in f if line.startswith("Uid:"))
    assert host_uid != "65534"  # mapped: nobody inside is someone else on the host
    result = sandboxctl(daemon, "exec", "userns", "--", "/bin/sh", "-c", "id -u; id -g")
    assert (result.returncode, result.stdout) == (0, "65534\n65534\n"), result


def test_reload_waits_for_the_units_it_started(running: Daemon) -> None:
    running.write_unit("fine", SLEEPER.replace("autostart = false", "autostart = true"))
    running.write_unit("nouser", TICKER.replace('user = "nobody"', 'user = "no-such-user"'))
    # ready = "notify": an exit before READY=1 is a failed start (with ready = "started" the
    # unit is running from the exec on, and a crash after it is no outcome of the reload).
    loop = '[service]\nexec = ["/bin/sh", "-c", "exit 3"]\nready = "notify"\n'
    loop += '[restart]\ndelay = "5s"\n'
    running.write_unit("loop", loop)
    result = sandboxctl(running, "reload")
    assert result.returncode == 1, result
    lines = result.stdout.splitlines()
    assert lines[0] == "started: fine, loop, nouser"
    assert lines[1] == "fine: running"
    assert lines[2] == "loop: backoff: restarting in 5s after exit-code:3"
    assert lines[3].startswith("nouser: failed: launch-error:user: "), lines
    # The event stream says what the exit led to, not the state before it.
    events = sandboxctl(running, "events", "loop", "--no-follow", "--json").stdout.splitlines()
    exited = [json.loads(e) for e in events if json.loads(e)["event"] == "exited"]
    assert exited[0]["state"] == "backoff", exited
    # Fixed while crash-looping: the backoff from before the reload is no outcome of it.
    running.write_unit("loop", SLEEPER.replace("autostart = false", "autostart = true"))
    running.remove_unit("nouser")
    fixed = sandboxctl(running, "reload", "--json")
    assert fixed.returncode == 0, fixed
    answer = json.loads(fixed.stdout)
    assert answer["restarted"] == ["loop"] and answer["removed"] == ["nouser"]
    assert answer["outcomes"]["loop"]["state"] == "running" and answer["outcomes"]["loop"]["ok"]
    # --no-wait: the old behaviour, at once and without outcomes.
    again = SLEEPER.replace("autostart = false", "autostart = true").replace("1000", "2000")
    running.write_unit("loop", again)
    quick = sandboxctl(running, "reload", "--no-wait")
    assert (quick.returncode, quick.stdout) == (0, "restarted: loop\n")


def test_a_broken_file_shows_in_status_and_reload(running: Daemon) -> None:
    running.write_unit("web", TICKER.replace('user = "nobody"', "user = 'nobody'\nbogus = 1"))
    assert sandboxctl(running, "reload").returncode == 1
    lines = sandboxctl(running, "status").stdout.splitlines()
    web = next(line for line in lines if line.startswith("web "))
    assert web.split()[1] == "running*"
    assert lines[-1].startswith("* unit file invalid, running the last valid version")
    running.write_unit("web", TICKER)  # back to the version that runs
    back = sandboxctl(running, "reload")
    assert (back.returncode, back.stdout) == (0, "valid again, no change: web\n"), back
    assert "*" not in sandboxctl(running, "status").stdout
    running.write_unit("broken", "[service]\n")
    assert sandboxctl(running, "reload").returncode == 1
    running.remove_unit("broken")
    gone = sandboxctl(running, "reload")
    assert (gone.returncode, gone.stdout) == (0, "removed: broken\n"), gone
