"""The next run launched at an OOM kill, up to its Go (supervisor/engine/prelaunch.py), through
a real daemon on the real kernel: it execs only after the old run's exit was seen, and every
way the unit can turn away from that restart aborts it without a trace. Checks orders and
what is left, never durations. The window is made deterministic with the daemon's fault point
(SANDBOXD_FAULT_STOP_AT=prelaunch.begun:UNIT: it freezes itself right after the launch began).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from supervisor.engine import restarttrace
from supervisor.linux import faultpoint
from tests.support.daemon_kit import Daemon, UnixHTTPConnection, pid_alive, wait_for
from tests.support.kit import cgroup_version
from tests.support.requires import requires_root

pytestmark = [
    pytest.mark.root,
    requires_root,
    pytest.mark.skipif(cgroup_version() != 1, reason="a begun launch needs cgroup v1 renames"),
]

# Touches every page: OOM-killed under memory_max at once. As PID 1, PID 1 is the victim; run
# by sh (`survivor`), the child is, and PID 1 lives on.
HOG = ["/usr/bin/python3", "-c", "b = b'\\1' * (200 << 20)"]
GO_RECEIVED = "PID 1: Go received, ready to exec"


def oom_unit(argv: list[str], restart: str = 'delay = "0"\nburst = 3\n') -> str:
    return (
        f'[service]\nexec = {json.dumps(argv)}\nstop_timeout = "500ms"\n'
        '[resources]\nmemory_max = "48M"\nswap_max = "0"\n'
        f"[restart]\n{restart}"
    )


def survivor() -> list[str]:
    return ["/bin/sh", "-c", f"{' '.join(map(repr, HOG))}; exec sleep 1000"]


def pids(daemon: Daemon, event: str, unit: str, run: int | None = None) -> list[int]:
    return [e["pid"] for e in daemon.events(event, run) if e.get("unit") == unit]


def cgroup_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def frozen(daemon: Daemon) -> bool:
    assert daemon.proc is not None
    with open(f"/proc/{daemon.proc.pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def freeze_at_begun(daemon: Daemon, unit: str, env: dict[str, str] | None = None) -> int:
    """Start `daemon` to freeze right after it began `unit`'s next launch; that PID 1."""
    daemon.start(env={faultpoint.ENV: f"{faultpoint.PRELAUNCH_BEGUN}:{unit}", **(env or {})})
    wait_for(lambda: daemon._died() or frozen(daemon), 90,
             lambda: daemon.stderr_path().read_text()[-2000:])  # fmt: skip
    assert not daemon._died(), daemon.stderr_path().read_text()[-2000:]
    (begun,) = pids(daemon, "unit.prelaunch_begun", unit)
    # Waiting for Go in the spare cgroup, beside the OOM-killed run's (the unit's name).
    assert pid_alive(begun) and f".next.{unit}" in cgroup_of(begun), cgroup_of(begun)
    return begun


def test_an_oom_killed_pid1_is_restarted_through_the_begun_launch(daemon: Daemon) -> None:
    daemon.write_unit("hog", oom_unit(HOG))
    daemon.start(env={restarttrace.ENV: "1"})
    daemon.wait_unit("hog", lambda u: u["state"] == "failed", 90)
    wait_for(lambda: len(daemon.events("unit.failed")) == 1, 30)
    begun = pids(daemon, "unit.prelaunch_begun", "hog")
    started = pids(daemon, "unit.started", "hog")
    aborted = pids(daemon, "unit.prelaunch_aborted", "hog")
    used = [p for p in begun if p in started]
    assert used, (begun, started, aborted)
    # Each begun launch either ran as the restart or was aborted (the last: the policy gave
    # up), never both, and an aborted one is gone.
    assert sorted(begun) == sorted(used + aborted), (begun, started, aborted)
    assert not any(pid_alive(p) for p in aborted)
    traces = {e["pid"]: e for e in daemon.events("unit.restart_trace") if e["unit"] == "hog"}
    for pid in used:
        stages = [stage for stage, _ in traces[pid]["stages"]]
        exit_seen = stages.index(restarttrace.EXIT_SEEN)
        # Never two runs at once: the new PID 1 got its Go, and exec'd, after the old exit.
        assert exit_seen < stages.index(GO_RECEIVED), stages
        assert exit_seen < stages.index(restarttrace.EXEC_SEEN), stages
    daemon.stop()


def test_an_oom_kill_that_pid1_survives_aborts_the_begun_launch(daemon: Daemon) -> None:
    daemon.write_unit("child", oom_unit(survivor(), 'delay = "0"\nburst = 2\n'))
    daemon.start()
    daemon.wait_unit("child", lambda u: u["state"] == "failed", 90)
    begun = pids(daemon, "unit.prelaunch_begun", "child")
    assert begun
    # PID 1 lived on: the run was stopped for the OOM kill (STOPPING), which aborts the
    # begun launch; the restart after that stop launched afresh.
    assert pids(daemon, "unit.prelaunch_aborted", "child") == begun
    assert not set(begun) & set(pids(daemon, "unit.started", "child"))
    assert not any(pid_alive(p) for p in begun)
    daemon.stop()


def test_policy_no_begins_nothing(daemon: Daemon) -> None:
    daemon.write_unit("once", oom_unit(HOG, 'policy = "no"\n'))
    daemon.start()
    once = daemon.wait_unit("once", lambda u: u["state"] == "exited", 90)
    assert once["last_exit"] == "oom-killed"
    assert daemon.events("unit.prelaunch_begun") == []
    daemon.stop()


def test_a_stop_in_the_window_aborts_the_begun_launch(daemon: Daemon) -> None:
    daemon.write_unit("hog", oom_unit(survivor(), 'delay = "0"\nburst = 50\n'))
    begun = freeze_at_begun(daemon, "hog")
    # Sent whole while the daemon is frozen (the socket buffers it), read once it runs again:
    # the stop lands in the window, whatever the machine's load.
    conn = UnixHTTPConnection(daemon.socket)
    try:
        conn.request("POST", "/v1/units/hog/stop", body=b"{}",
                     headers={"Content-Type": "application/json"})  # fmt: skip
        daemon.signal(signal.SIGCONT)
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    daemon.wait_unit("hog", lambda u: u["state"] == "stopped")
    assert pids(daemon, "unit.prelaunch_aborted", "hog") == [begun]
    assert not pid_alive(begun)
    assert len(pids(daemon, "unit.started", "hog")) == 1  # the begun launch never ran
    daemon.stop()


def test_a_reload_that_changes_the_unit_in_the_window(daemon: Daemon) -> None:
    daemon.write_unit("edit", oom_unit(HOG, 'delay = "0"\nburst = 50\n'))
    begun = freeze_at_begun(daemon, "edit")
    daemon.write_unit("edit", oom_unit(["/bin/sleep", "1000"]))
    daemon.signal(signal.SIGHUP)  # pending until the daemon runs again
    daemon.signal(signal.SIGCONT)
    edit = daemon.wait_unit("edit", lambda u: u["state"] == "running" and "sleep" in _cmd(u))
    # Whichever came first (the exit or the reload), the launch begun for the old spec is
    # gone: aborted at the changed spec, or run and OOM-killed before the reload's restart.
    wait_for(lambda: not pid_alive(begun), 30)
    assert cgroup_of(edit["pid"]).count(".next.") == 0
    daemon.stop()


def test_a_daemon_exit_in_the_window_aborts_the_begun_launch(daemon: Daemon) -> None:
    daemon.write_unit("hog", oom_unit(survivor(), 'delay = "0"\nburst = 50\n'))
    begun = freeze_at_begun(daemon, "hog")
    daemon.signal(signal.SIGTERM)  # the runners end: theirs, when the daemon runs again
    daemon.signal(signal.SIGCONT)
    assert daemon.proc is not None
    daemon.proc.wait(60)
    assert pids(daemon, "unit.prelaunch_aborted", "hog") == [begun]
    assert not pid_alive(begun)


@pytest.mark.usefixtures("not_a_subreaper")
def test_a_daemon_killed_in_the_window_leaves_nothing_to_the_next(daemon: Daemon) -> None:
    """The go pipe's write end dies with the daemon: the waiting PID 1 reads EOF and exits
    without exec (init reaps it), and the next daemon's start-up sweep removes the spare
    cgroup, which no record names."""
    daemon.write_unit("hog", oom_unit(survivor(), 'delay = "0"\nburst = 50\n'))
    begun = freeze_at_begun(daemon, "hog")
    daemon.kill9()
    wait_for(lambda: not pid_alive(begun), 30)
    daemon.remove_unit("hog")
    daemon.start()
    wait_for(lambda: daemon.leftover_cgroups() == [], 30, lambda: str(daemon.leftover_cgroups()))
    daemon.stop()


def _cmd(u: dict[str, Any]) -> str:
    pid = u.get("pid")
    if not pid:
        return ""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
