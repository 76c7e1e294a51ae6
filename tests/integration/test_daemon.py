"""sandboxd end to end: a real daemon, real sandboxes, real cgroups (root).

Status is read through the control socket (`GET /v1/units`, what `sandboxctl status --json`
prints). Each test owns its daemon(s) and cgroup parent; see conftest.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import signal
import socket
import time
from collections.abc import Callable

import pytest

from supervisor import gcpolicy
from tests.support.daemon_kit import Daemon, pid_alive, wait_for
from tests.support.requires import cgroup_version, requires_root

pytestmark = [pytest.mark.root, requires_root]

SLEEPER = """
[service]
exec = ["/bin/sh", "-c", "echo started; exec sleep 1000"]
stop_timeout = "500ms"
"""


def unit(argv: list[str] | str, **sections: dict[str, object]) -> str:
    """A unit file; a string is a /bin/sh script. JSON strings are valid TOML strings."""
    if isinstance(argv, str):
        argv = ["/bin/sh", "-c", argv]
    text = f'[service]\nexec = {json.dumps(argv)}\nstop_timeout = "500ms"\n'
    for name, values in sections.items():
        text += f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    return text


@pytest.mark.cgroup_v2
def test_startup_status_stop(daemon: Daemon) -> None:
    daemon.write_unit("web", SLEEPER)
    daemon.write_unit("manual", SLEEPER + "autostart = false\n")
    daemon.start()
    web = daemon.wait_unit("web", lambda u: u["state"] == "running")
    assert web["pid"] > 0 and pid_alive(web["pid"])
    assert web["restarts"] == 0 and web["last_exit"] is None and web["error"] is None
    started = dt.datetime.fromisoformat(web["started_at"])
    assert abs((dt.datetime.now(dt.UTC) - started).total_seconds()) < 30
    assert web["memory_bytes"] and web["memory_bytes"] > 0
    assert daemon.status()["manual"]["state"] == "stopped"
    wait_for(lambda: daemon.output("web") == "started\n", 60)
    # SIGTERM: sh as PID 1 of a PID namespace ignores SIGTERM, so stop escalates to SIGKILL of
    # the whole cgroup after stop_timeout.
    assert daemon.stop() == 0
    assert not pid_alive(web["pid"])
    (timeout,) = daemon.events("unit.stop_timeout")
    assert timeout["unit"] == "web" and timeout["level"] == "warning"
    assert [e["unit"] for e in daemon.events("unit.stopped")] == ["web"]
    assert not daemon.leftover_pids() and not daemon.leftover_cgroups()


def test_the_list_view_reads_memory_live_through_its_kept_rows(daemon: Daemon) -> None:
    """GET /v1/units keeps each row's text between requests (engine/status.py, ListText) and
    its run's memory reader with it: the memory a sandbox takes after its row was kept shows
    at the next request, a restart's new run is read from its own cgroup, a stopped unit's
    memory is null. Read from the real cgroup file (cgroup v1: memory.usage_in_bytes)."""
    fill = 16 << 20  # written to the sandbox's /tmp tmpfs, charged to its memory cgroup
    script = (f"trap 'head -c {fill} /dev/zero > /tmp/fill' USR1; echo started; "
              "while :; do sleep 1 & wait $!; done")  # fmt: skip
    daemon.write_unit("fill", unit(script))
    daemon.start()
    first = daemon.wait_unit("fill", lambda u: u["state"] == "running")
    wait_for(lambda: daemon.output("fill") == "started\n", 60)  # the trap is set
    before = daemon.status()["fill"]["memory_bytes"]  # the row is kept from here on
    assert before and 0 < before < fill
    signal_only_ours = first["pid"]  # the sandbox's PID 1, started by this test's daemon
    os.kill(signal_only_ours, signal.SIGUSR1)
    filled = daemon.wait_unit("fill", lambda u: u["memory_bytes"] >= before + fill * 3 // 4)
    assert filled["pid"] == first["pid"]
    code, _ = daemon.request("POST", "/v1/units/fill/restart")
    assert code == 200
    again = daemon.wait_unit("fill", lambda u: u["state"] == "running" and u["pid"] != first["pid"])
    # The new run's own cgroup: the fill went with the old sandbox's /tmp.
    assert 0 < again["memory_bytes"] < filled["memory_bytes"] - fill // 2
    code, _ = daemon.request("POST", "/v1/units/fill/stop")
    assert code == 200
    stopped = daemon.wait_unit("fill", lambda u: u["state"] != "running")
    assert stopped["memory_bytes"] is None and stopped["uptime"] is None
    assert daemon.stop() == 0
    assert not daemon.leftover_pids() and not daemon.leftover_cgroups()


def test_restart_policies_backoff_and_start_limit(daemon: Daemon) -> None:
    daemon.write_unit("once", unit("exit 1", restart={"policy": "no"}))
    daemon.write_unit("clean", unit("exit 0"))  # on-failure: a clean exit is final
    daemon.write_unit("always", unit("exit 0", restart={"policy": "always", "delay": "100ms",
                                                      "burst": 100}))  # fmt: skip
    daemon.write_unit("crash", unit("exit 3", restart={"delay": "200ms", "max_delay": "400ms",
                                                     "burst": 4, "interval": "1m"}))  # fmt: skip
    daemon.write_unit("slow", unit("exit 2", restart={"delay": "20s"}))
    daemon.start()
    once = daemon.wait_unit("once", lambda u: u["state"] == "exited")
    assert once["last_exit"] == "exit-code:1" and once["restarts"] == 0
    clean = daemon.wait_unit("clean", lambda u: u["state"] == "exited")
    assert clean["last_exit"] == "exit-code:0"
    daemon.wait_unit("always", lambda u: u["restarts"] >= 3)
    slow = daemon.wait_unit("slow", lambda u: u["state"] == "backoff")
    assert 10 < slow["next_start_in"] <= 20 and "exit-code:2" in slow["error"]
    crash = daemon.wait_unit("crash", lambda u: u["state"] == "failed")
    assert crash["restarts"] == 3 and crash["last_exit"] == "exit-code:3"
    assert "start limit" in crash["error"]
    assert daemon.unit("crash")["recent_exits"] == ["exit-code:3"] * 4
    delays = [e["delay"] for e in daemon.events("unit.backoff") if e["unit"] == "crash"]
    assert delays == [0.2, 0.4, 0.4]  # doubling, capped at max_delay
    (failed,) = [e for e in daemon.events("unit.failed") if e["unit"] == "crash"]
    assert failed["recent_exits"] == ["exit-code:3"] * 4
    # `start` resets a failed unit: one more run, then failed again only after 4 starts.
    code, body = daemon.request("POST", "/v1/units/crash/start")
    assert code in (200, 409), body
    daemon.wait_unit("crash", lambda u: u["restarts"] >= 4)


def test_reload_semantics_via_sighup(daemon: Daemon) -> None:
    for name in ("keep", "edit", "live", "gone", "bad"):
        daemon.write_unit(name, SLEEPER)
    daemon.start()
    before = {n: daemon.wait_unit(n, lambda u: u["state"] == "running") for n in
              ("keep", "edit", "live", "gone", "bad")}  # fmt: skip
    daemon.write_unit("edit", SLEEPER.replace("1000", "2000"))
    daemon.write_unit("live", SLEEPER + '[resources]\nmemory_max = "96M"\npids_max = 64\n')
    daemon.write_unit("bad", SLEEPER + "bogus_key = 1\n")
    daemon.write_unit("new", SLEEPER)
    daemon.remove_unit("gone")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: len(daemon.events("daemon.reloaded")) == 2)
    reloaded = daemon.events("daemon.reloaded")[-1]
    assert (reloaded["started"], reloaded["restarted"], reloaded["updated"]) == (
        ["new"],
        ["edit"],
        ["live"],
    )
    assert (reloaded["stopped"], reloaded["invalid"]) == (["gone"], ["bad"])
    daemon.wait_unit("new", lambda u: u["state"] == "running")
    edit = daemon.wait_unit(
        "edit", lambda u: u["state"] == "running" and u["pid"] != before["edit"]["pid"]
    )
    assert edit["pid"] != before["edit"]["pid"]
    wait_for(lambda: "gone" not in daemon.status())
    now = daemon.status()
    assert now["keep"]["pid"] == before["keep"]["pid"]  # unchanged: untouched
    assert now["live"]["pid"] == before["live"]["pid"]  # resources only: no restart...
    limit = daemon.cgroup_file("live", "memory.max" if _v2() else "memory.limit_in_bytes")
    assert int(limit.read_text()) == 96 << 20  # ...applied live
    assert int(daemon.cgroup_file("live", "pids.max").read_text()) == 64
    bad = now["bad"]
    assert bad["state"] == "running" and bad["pid"] == before["bad"]["pid"]
    assert "bogus_key" in bad["error"]
    assert not pid_alive(before["gone"]["pid"])
    # The API reload reports the invalid unit (exit 1 for sandboxctl reload).
    code, body = daemon.request("POST", "/v1/reload")
    assert body["ok"] is False and "bad" in body["invalid"], (code, body)


def test_the_daemon_freezes_its_loaded_units_out_of_collections(daemon: Daemon) -> None:
    """supervisor/gcpolicy.py in a real daemon: its thresholds, and the survivors of its first
    load frozen (a compaction, logged) before any later reload; later reloads settle without
    compacting while the daemon has not grown by half."""
    daemon.write_unit("web", SLEEPER)
    daemon.start()
    daemon.wait_unit("web", lambda u: u["state"] == "running")
    wait_for(lambda: daemon.events("daemon.gc_compacted"))
    (first,) = daemon.events("daemon.gc_compacted")
    assert first["threshold"] == list(gcpolicy.THRESHOLDS)
    assert first["frozen"] > 10_000  # the daemon's modules and its unit, at least
    daemon.write_unit("web", SLEEPER.replace("1000", "2000"))
    code, body = daemon.request("POST", "/v1/reload")
    assert code == 200 and body["restarted"] == ["web"], body
    daemon.wait_unit("web", lambda u: u["state"] == "running")
    assert len(daemon.events("daemon.gc_compacted")) == 1


def test_oom_policies(daemon: Daemon) -> None:
    hog = ["/usr/bin/python3", "-c", "b = b'\\1' * (200 << 20)"]  # touches every page
    limits = {"memory_max": "48M", "swap_max": "0"}
    daemon.write_unit("pid1", unit(hog, resources=limits, oom={"policy": "stop"}))
    script = f"{shlex.join(hog)}; echo survived; exec sleep 1000"
    daemon.write_unit("child", unit(script, resources=limits, oom={"policy": "continue"}))
    daemon.start()
    pid1 = daemon.wait_unit("pid1", lambda u: u["state"] == "exited")
    (pid1_pid,) = [e["pid"] for e in daemon.events("unit.started") if e["unit"] == "pid1"]
    assert pid1["last_exit"] == "oom-killed" and pid1["oom_kills"] >= 1
    child = daemon.wait_unit("child", lambda u: u["oom_kills"] >= 1)
    assert child["state"] == "running" and child["restarts"] == 0
    wait_for(lambda: "survived" in daemon.output("child"), 60)
    kills = [e for e in daemon.events("unit.oom_kill") if e["unit"] == "child"]
    assert kills and kills[0]["pid1_alive"] is True and kills[0]["policy"] == "continue"
    # The kernel log names the victims: PID 1 itself in "pid1", a child process in "child".
    victims = {e["unit"]: e for e in daemon.events("unit.oom_victim")}
    assert victims["pid1"]["main"] is True and victims["pid1"]["command"] == "python3"
    assert victims["pid1"]["victim_pid"] == pid1_pid
    assert victims["child"]["main"] is False and victims["child"]["command"] == "python3"
    assert daemon.unit("child")["oom_victims"][0]["main"] is False


def test_two_daemons_side_by_side(daemons: Callable[[], Daemon]) -> None:
    a, b = daemons(), daemons()
    a.write_unit("same", SLEEPER)
    b.write_unit("same", SLEEPER)
    a.start()
    b.start()
    pa = a.wait_unit("same", lambda u: u["state"] == "running")["pid"]
    pb = b.wait_unit("same", lambda u: u["state"] == "running")["pid"]
    assert pa != pb
    assert a.stop() == 0 and pid_alive(pb)
    assert b.stop() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_exits_promptly_after_daemon_stopped(daemon: Daemon, signum: int) -> None:
    # The process used to linger after `daemon.stopped` while the interpreter tore itself
    # down; it now leaves at once (daemon.exit_now; tests/unit/test_daemon_cli.py checks that
    # no teardown runs). The bound here is generous: only a regression to seconds trips it.
    daemon.write_unit("web", SLEEPER)
    daemon.start()
    daemon.wait_unit("web", lambda u: u["state"] == "running")
    assert daemon.proc is not None
    daemon.signal(signum)
    wait_for(lambda: bool(daemon.events("daemon.stopped")), 60)
    assert daemon.proc.wait(10) == 0
    lines = daemon.stderr_path().read_text().splitlines()
    assert json.loads(lines[-1])["event"] == "daemon.stopped"  # nothing after it, all flushed
    assert not daemon.leftover_pids()


def _v2() -> bool:
    return cgroup_version() == 2


def test_invalid_unit_never_started(daemon: Daemon) -> None:
    daemon.write_unit("broken", '[service]\nexec = ["relative"]\n')
    daemon.start()
    broken = daemon.wait_unit("broken", lambda u: u["state"] == "invalid")
    assert broken["pid"] is None and "absolute" in broken["error"]
    assert "running version" not in broken["error"]
    assert not daemon.leftover_cgroups()


def test_sd_notify_protocol(daemon: Daemon) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = daemon.base / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(30)
    daemon.write_unit("web", SLEEPER)
    daemon.start(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})

    def until(prefix: str) -> list[str]:
        while True:
            lines = sock.recv(4096).decode().split("\n")
            if any(line.startswith(prefix) for line in lines):
                return lines

    ready = until("READY=1")
    # READY=1 once the API listens; the launches it began may still be in flight (the
    # watchdog pings carry the summary as they go on).
    assert any(line.startswith("STATUS=1 units: 1 ") for line in ready), ready
    while not any(line.startswith("STATUS=1 units: 1 running") for line in until("WATCHDOG=1")):
        pass
    daemon.signal(signal.SIGHUP)
    reloading = until("RELOADING=1")
    (usec,) = [int(x.split("=")[1]) for x in reloading if x.startswith("MONOTONIC_USEC=")]
    assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 30_000_000
    until("READY=1")
    daemon.signal(signal.SIGTERM)
    assert any(line.startswith("STATUS=stopping") for line in until("STOPPING=1"))
    assert daemon.stop() == 0
    sock.close()


def test_views_give_their_kept_cgroup_fds_back_once_quiet(daemon: Daemon) -> None:
    """A status list and a `top` frame read the unit's cgroup files through fds the daemon
    keeps (one pread each next time); each open cgroup file holds ~4.8 KiB of kernel memory
    (its seq_file's page-sized buffer, the file, the kernfs_open_file), so once no view has
    read them for a quiet period (engine/keptrelease.py: 30 to 60 s) they are closed, and
    the next view opens them afresh."""
    daemon.write_unit("web", SLEEPER)
    daemon.start()
    daemon.wait_unit("web", lambda u: u["state"] == "running")
    assert daemon.proc is not None
    pid, mine = daemon.proc.pid, f"{daemon.cgroup_parent}/web/"

    def held() -> list[str]:
        found = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except FileNotFoundError:
                continue
            if target.startswith("/sys/fs/cgroup/") and mine in target:
                found.append(target)
        return found

    code, _ = daemon.request("GET", "/v1/top")
    assert code == 200
    assert daemon.status()["web"]["memory_bytes"] > 0
    assert any("memory." in path for path in held())
    wait_for(lambda: not held(), 180)
    assert daemon.status()["web"]["memory_bytes"] > 0  # read afresh, and kept again
    assert any("memory." in path for path in held())
