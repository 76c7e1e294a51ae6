"""sandboxd installed as a systemd service, end to end, on a systemd + cgroup v2 host.

One scenario in order (each test builds on the previous one; the first failure makes the
rest fail fast with the reason): install from wheels -> start -> two units -> reload edits ->
upgrade + restart keeps the services -> OOM kill and restart -> structured events in the
journal -> watchdog kills a hung daemon and the next one re-adopts -> stop leaves nothing ->
uninstall keeps the unit files. Run it with scripts/test-systemd.sh (one VM boot).
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from _systemd import SLOW, alive, main_pid, running, sh, skip_reason, units, wait_for

_REASON = skip_reason()
pytestmark = [
    pytest.mark.systemd,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    pytest.mark.timeout(600),
]

CHECKOUT = Path(__file__).resolve().parents[2]
WHEELS = Path(os.environ.get("SANDBOXD_WHEELS", CHECKOUT / "build" / "wheels"))
UNITS = Path("/etc/sandboxd/units")
LOGS = Path("/var/log/sandboxd")
HOLDER_CGROUP = Path("/sys/fs/cgroup/system.slice/sandboxd-sandboxes.service")
INSTALLED = (
    "/usr/local/bin/sandboxd",
    "/usr/local/bin/sandboxctl",
    "/opt/sandboxd/venv/bin/sandboxd",
    "/opt/sandboxd/libexec/sandboxd-stop",
    "/opt/sandboxd/libexec/sandboxd-holder",
    "/etc/systemd/system/sandboxd.service",
    "/etc/systemd/system/sandboxd-sandboxes.service",
    "/usr/lib/tmpfiles.d/sandboxd.conf",
    "/usr/lib/sysusers.d/sandboxd.conf",
    "/etc/sandboxd/sandboxd.toml",
    "/usr/local/share/man/man1/sandboxctl.1",
    "/usr/local/share/man/man5/sandboxd.unit.5",
    "/usr/local/share/man/man8/sandboxd.8",
    "/usr/local/share/bash-completion/completions/sandboxctl",
    "/usr/local/share/zsh/site-functions/_sandboxctl",
)
DROPIN = Path("/etc/systemd/system/sandboxd.service.d/test-watchdog.conf")

# A shell PID 1 (dash) that handles SIGTERM (PID 1 only gets signals it has a handler for)
# and writes a numbered line a second, to show its output still reaches the log file after
# each daemon restart.
LOOP = 'trap "exit 0" TERM; i=0; while :; do echo "tick $i"; i=$((i+1)); sleep 1 & wait $!; done'
ALPHA = f"""
[service]
exec = ["/bin/sh", "-c", '{LOOP}']
stop_timeout = "3s"
[resources]
memory_max = "32M"
pids_max = 16
"""
BETA = f"""
[service]
exec = ["/bin/sh", "-c", '{LOOP}']
env = {{ EDIT = "1" }}
stop_timeout = "3s"
"""
HOG = """
[service]
exec = ["/usr/bin/python3", "-c", '''
import time
b = []
while True:
    b.append(bytearray(8 << 20))
    time.sleep(0.05)
''']
stop_signal = "SIGINT"
stop_timeout = "2s"
[resources]
memory_max = "48M"
swap_max = "0"
[restart]
policy = "on-failure"
delay = "1s"
max_delay = "2s"
burst = 50
"""

state: dict[str, Any] = {}


# -- helpers ---------------------------------------------------------------------------------


def cgroup_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text().strip().removeprefix("0::")


def journal_events(since: str = "") -> list[dict[str, Any]]:
    """The daemon's structured events: journal entries whose MESSAGE is a JSON object."""
    argv = ["journalctl", "-u", "sandboxd", "-o", "json", "--no-pager"]
    out = sh(*argv, *(["--since", since] if since else [])).stdout
    events = []
    for line in out.splitlines():
        message = json.loads(line).get("MESSAGE")
        if isinstance(message, str) and message.startswith("{"):
            events.append(json.loads(message))
    return events


def journal_text() -> str:
    return sh("journalctl", "-u", "sandboxd", "-o", "cat", "--no-pager").stdout


def ticks(name: str) -> list[int]:
    log = LOGS / f"{name}.log"
    text = log.read_text() if log.exists() else ""
    return [int(n) for n in re.findall(r"^tick (\d+)$", text, re.M)]


def output_flows(*names: str) -> None:
    """What each service writes from now on reaches its log file: the daemon reads its pipe."""
    for name in names:
        mark = (ticks(name) or [-1])[-1]
        wait_for(f"{name} output (tick {mark + 3}) in {LOGS}/{name}.log",
                 lambda name=name, mark=mark: (ticks(name) or [-1])[-1] >= mark + 3)  # fmt: skip
    lost = [e for e in journal_events() if e.get("event") == "unit.output_lost"]
    assert not lost, lost


def install() -> None:
    sh(str(CHECKOUT / "packaging" / "install.sh"), "--wheels", str(WHEELS), timeout=600)


# -- the scenario ----------------------------------------------------------------------------


def test_install_from_wheels() -> None:
    assert WHEELS.is_dir(), f"{WHEELS}: build the wheels on the host first (test-systemd.sh)"
    install()
    for path in INSTALLED:
        assert Path(path).exists(), path
    assert UNITS.is_dir() and Path("/run/sandboxd").is_dir()
    sh("getent", "group", "sandboxd")
    state["release"] = os.readlink("/opt/sandboxd/venv")
    # The interpreter is Debian's, not the checkout's venv: a real install.
    cfg = Path("/opt/sandboxd/venv/pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg, cfg


def test_start() -> None:
    sh("systemctl", "start", "sandboxd")  # Type=notify: returns once READY=1
    assert sh("systemctl", "is-active", "sandboxd").stdout.strip() == "active"
    assert sh("systemctl", "is-active", "sandboxd-sandboxes").stdout.strip() == "active"
    assert sh("/usr/local/bin/sandboxctl", "status", "--json").stdout.strip().startswith("{")
    state["daemon"] = main_pid()
    assert cgroup_of(state["daemon"]) == "/system.slice/sandboxd.service"


def test_two_units_run_in_their_cgroups() -> None:
    (UNITS / "alpha.toml").write_text(ALPHA)
    (UNITS / "beta.toml").write_text(BETA)
    out = sh("/usr/local/bin/sandboxctl", "reload")
    assert "alpha" in out.stdout and "beta" in out.stdout, out.stdout
    now = wait_for("alpha and beta running", running("alpha", "beta"))
    for name in ("alpha", "beta"):
        pid = now[name]["pid"]
        assert cgroup_of(pid) == f"/system.slice/sandboxd-sandboxes.service/units/{name}"
        state[name] = pid
    assert (HOLDER_CGROUP / "units" / "alpha" / "memory.max").read_text().strip() == str(32 << 20)


def test_systemctl_reload_reconciles_an_edit() -> None:
    (UNITS / "beta.toml").write_text(BETA.replace('EDIT = "1"', 'EDIT = "2"'))
    (UNITS / "alpha.toml").write_text(ALPHA.replace('"32M"', '"40M"'))
    sh("systemctl", "reload", "sandboxd")  # ExecReload: synchronous `sandboxctl reload`

    def beta_restarted() -> dict[str, dict[str, Any]] | None:
        now = units()
        beta = now["beta"]
        return now if beta["state"] == "running" and beta["pid"] != state["beta"] else None

    now = wait_for("beta restarted with its new spec", beta_restarted)
    assert now["alpha"]["pid"] == state["alpha"], "a [resources]-only edit must not restart"
    assert (HOLDER_CGROUP / "units" / "alpha" / "memory.max").read_text().strip() == str(40 << 20)
    state["beta"] = now["beta"]["pid"]


def test_upgrade_and_restart_keep_the_services() -> None:
    # A short watchdog for the watchdog test below; it takes effect with this restart.
    DROPIN.parent.mkdir(parents=True, exist_ok=True)
    DROPIN.write_text("[Service]\nWatchdogSec=15s\n")
    install()  # upgrade in place: a new release, the daemon still runs the old one
    assert os.readlink("/opt/sandboxd/venv") != state["release"]
    old = state["daemon"]
    sh("systemctl", "restart", "sandboxd", timeout=300)
    assert not alive(old)
    state["daemon"] = main_pid()
    assert state["daemon"] != old
    now = wait_for("alpha and beta re-adopted", running("alpha", "beta"))
    assert now["alpha"]["pid"] == state["alpha"]
    assert now["beta"]["pid"] == state["beta"]
    assert "sandboxd-stop: restart: ending daemon" in journal_text()
    adopted = {e.get("unit") for e in journal_events() if e.get("event") == "unit.adopted"}
    assert {"alpha", "beta"} <= adopted, adopted
    output_flows("alpha", "beta")


def test_oom_kill_then_restart() -> None:
    (UNITS / "hog.toml").write_text(HOG)
    sh("/usr/local/bin/sandboxctl", "reload")
    wait_for(
        "hog OOM-killed and restarted",
        lambda: (h := units().get("hog")) and h["oom_kills"] >= 1 and h["restarts"] >= 1,
    )  # fmt: skip
    (UNITS / "hog.toml").unlink()  # keep the VM's 2 GiB calm for what follows
    sh("/usr/local/bin/sandboxctl", "reload")


def test_journal_has_structured_events() -> None:
    events = journal_events()
    names = {e.get("event") for e in events}
    assert {"daemon.ready", "unit.started", "unit.exited"} <= names, names
    oom = [e for e in events if e.get("event") == "unit.exited" and e.get("unit") == "hog"]
    assert any(e.get("reason") == "oom-killed" for e in oom), oom


def test_watchdog_restarts_a_hung_daemon() -> None:
    hung = state["daemon"]
    os.kill(hung, signal.SIGSTOP)
    # WatchdogSec=15s, then SIGABRT + SIGCONT: faulthandler prints where it hung, and it dies.
    wait_for("the hung daemon killed", lambda: not alive(hung), timeout=90)
    wait_for("a new daemon", lambda: main_pid() not in (0, hung), timeout=60)
    now = wait_for("alpha and beta re-adopted", running("alpha", "beta"), timeout=SLOW)
    assert now["alpha"]["pid"] == state["alpha"]
    assert now["beta"]["pid"] == state["beta"]
    text = journal_text()
    assert "Fatal Python error: Aborted" in text, "PYTHONFAULTHANDLER: the hung daemon's stack"
    assert "watchdog timeout" in sh("journalctl", "-u", "sandboxd", "--no-pager").stdout.lower()
    state["daemon"] = main_pid()
    # The second re-adoption in a row: it once looked for the pipe under the first re-adopting
    # daemon's fd number instead of PID 1's, and logged unit.output_lost.
    output_flows("alpha", "beta")


def test_stop_leaves_nothing() -> None:
    sh("systemctl", "stop", "sandboxd", timeout=300)
    assert sh("systemctl", "is-active", "sandboxd", check=False).stdout.strip() == "inactive"
    wait_for("sandboxd-sandboxes stopped",
             lambda: sh("systemctl", "is-active", "sandboxd-sandboxes",
                        check=False).stdout.strip() == "inactive")  # fmt: skip
    for name in ("alpha", "beta"):
        assert not alive(state[name]), f"{name} (pid {state[name]}) survived the stop"
    assert not HOLDER_CGROUP.exists(), list(HOLDER_CGROUP.rglob("cgroup.procs"))
    leftover = list(Path("/sys/fs/cgroup/system.slice/sandboxd.service").glob("**/units/*"))
    assert not leftover, leftover
    text = journal_text()
    assert "sandboxd-stop: stop: stopping sandboxd-sandboxes.service" in text
    stopped = {e.get("unit") for e in journal_events() if e.get("event") == "unit.stopped"}
    assert {"alpha", "beta"} <= stopped, "the daemon stops each service itself, gracefully"


def test_uninstall_keeps_unit_files() -> None:
    sh(str(CHECKOUT / "packaging" / "uninstall.sh"))
    for path in INSTALLED:
        if not path.startswith("/etc/sandboxd/"):
            assert not Path(path).exists(), path
    assert sorted(p.name for p in UNITS.iterdir()) == ["alpha.toml", "beta.toml"]
    assert Path("/etc/sandboxd/sandboxd.toml").exists(), "config is kept unless --purge"
