"""Service output across daemon restarts: the next daemon finds the output pipe in PID 1.

The state file records the number under which PID 1 holds the pipe's read end (the kept fd).
A re-adopting daemon opens the pipe under a number of its own; recording that one instead
lost the output at the *second* restart (the systemd e2e test saw it after its watchdog
restart). Units started at different times hold their pipes under different numbers, which is
what makes the two differ.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon_kit import Daemon, wait_for
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root, pytest.mark.usefixtures("not_a_subreaper")]

# A dash PID 1 that redirects on every round: dash saves fds with F_DUPFD at 10 and above,
# bash would use 255 and down, and `sleep & wait` forks; none of it may cost the kept fd.
SHELL = """
[service]
exec = ["/bin/sh", "-c", '''
trap "exit 0" TERM
i=0
while :; do
    echo "out $i"
    echo "err $i" >&2
    { echo hidden; } >/dev/null 2>&1
    ls /nonexistent 2>/dev/null
    i=$((i + 1))
    sleep 0.05 & wait $!
done''']
stop_timeout = "2s"
"""
OUT = re.compile(r"^out (\d+)$", re.MULTILINE)


def outs(log: Path) -> list[int]:
    return [int(n) for n in OUT.findall(log.read_text())] if log.exists() else []


def record(daemon: Daemon, unit: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((daemon.state / "units" / f"{unit}.json").read_text())
    return data


def pipe_of(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/fd/1")


def grows_past(log: Path, mark: int) -> Callable[[], bool]:
    return lambda: bool(outs(log)) and outs(log)[-1] > mark


def test_shell_output_survives_repeated_daemon_restarts(daemon: Daemon) -> None:
    daemon.write_unit("alpha", SHELL)
    daemon.start()
    alpha = daemon.wait_unit("alpha", lambda u: u["state"] == "running")["pid"]
    daemon.write_unit("beta", SHELL)  # a later launch: its pipe sits under another number
    assert daemon.request("POST", "/v1/reload")[0] == 200
    beta = daemon.wait_unit("beta", lambda u: u["state"] == "running")["pid"]
    pids = {"alpha": alpha, "beta": beta}
    for unit in pids:
        wait_for(lambda unit=unit: len(outs(daemon.logs / f"{unit}.log")) > 5, 30)
    daemon.wait_recorded()
    kept = {u: record(daemon, u)["output_fd"] for u in pids}
    assert kept["alpha"] != kept["beta"]
    for restart in range(3):
        for unit, pid in pids.items():
            # The recorded number is PID 1's, and it is the output pipe.
            fd = record(daemon, unit)["output_fd"]
            assert fd == kept[unit], (restart, unit, fd, kept)
            assert os.readlink(f"/proc/{pid}/fd/{fd}") == pipe_of(pid)
        daemon.wait_recorded()
        daemon.kill9()
        marks = {u: outs(daemon.logs / f"{u}.log")[-1] for u in pids}
        daemon.start()
        for unit, pid in pids.items():
            daemon.wait_unit(unit, lambda u, pid=pid: u["pid"] == pid and u["state"] == "running")
            # Written after the restart, by a service whose output the new daemon reads.
            log = daemon.logs / f"{unit}.log"
            wait_for(grows_past(log, marks[unit] + 20), 30, lambda log=log: str(outs(log)[-3:]))
        assert not daemon.events("unit.output_lost"), daemon.events("unit.output_lost")
        assert not daemon.events("unit.output_reopened")
    assert daemon.stop() == 0
    for unit in pids:
        numbers = outs(daemon.logs / f"{unit}.log")
        assert numbers == list(range(len(numbers))), f"{unit}: every line once, in order"


# A Python PID 1 that does to the output pipe's fds what `how` says, then prints a line per
# SIGUSR1 (so that it writes nothing while no daemon reads: see the module docstring of
# supervisor/engine/output.py for what a service without the kept fd risks then).
TAMPER = """
[service]
exec = ["/usr/bin/python3", "-c", '''
import os, signal, sys
how = sys.argv[1]
pipe = os.fstat(1).st_ino
kept = [int(n) for n in os.listdir("/proc/self/fd")
        if int(n) > 2 and os.path.exists(f"/proc/self/fd/{n}")
        and os.fstat(int(n)).st_ino == pipe]
for fd in kept:
    if how == "not-a-pipe":
        os.dup2(os.open("/dev/null", os.O_RDONLY), fd)
    elif how == "other-pipe":
        os.dup2(os.pipe()[0], fd)
    else:
        os.close(fd)
if how != "stdout-only":
    null = os.open("/dev/null", os.O_WRONLY)
    print("tampered", kept, flush=True)
    os.dup2(null, 1)
    os.dup2(null, 2)
else:
    print("tampered", kept, flush=True)
signal.signal(signal.SIGUSR1, lambda *_: print("usr1", flush=True))
while True:
    signal.pause()
''', "HOW"]
stop_signal = "SIGINT"
stop_timeout = "2s"
"""


def tamper_then_restart_daemon(daemon: Daemon, how: str) -> tuple[int, int, Path]:
    """Start the TAMPER unit (it does `how` to its kept fd), SIGKILL the daemon, start a new
    one that re-adopts it: (PID 1, the recorded output fd, the log file)."""
    daemon.write_unit("py", TAMPER.replace("HOW", how))
    daemon.start()
    pid = daemon.wait_unit("py", lambda u: u["state"] == "running")["pid"]
    log = daemon.logs / "py.log"
    wait_for(lambda: log.exists() and "tampered" in log.read_text(), 30)
    daemon.wait_recorded()
    fd = record(daemon, "py")["output_fd"]
    daemon.kill9()
    daemon.start()
    daemon.wait_unit("py", lambda u: u["pid"] == pid and u["state"] == "running")
    return pid, fd, log


def test_output_is_found_through_stdout_without_the_kept_fd(daemon: Daemon) -> None:
    pid, fd, log = tamper_then_restart_daemon(daemon, "stdout-only")
    (event,) = daemon.events("unit.output_reopened")
    assert (event["unit"], event["fd"], event["reason"]) == ("py", fd, "missing"), event
    assert event["via_fd"] == 1  # the service's stdout: opened read-only, a read end
    assert record(daemon, "py")["output_fd"] == 1
    os.kill(pid, signal.SIGUSR1)  # the test's daemon started it
    wait_for(lambda: "usr1" in log.read_text(), 30, log.read_text)
    assert not daemon.events("unit.output_lost")
    assert daemon.stop() == 0


@pytest.mark.parametrize(
    ("how", "found"),
    [("missing", None), ("not-a-pipe", "/dev/null"), ("other-pipe", "pipe:[")],
)
def test_output_lost_says_why(daemon: Daemon, how: str, found: str | None) -> None:
    _, fd, _ = tamper_then_restart_daemon(daemon, how)
    (event,) = daemon.events("unit.output_lost")
    assert (event["unit"], event["fd"], event["reason"]) == ("py", fd, how), event
    if found is None:
        assert event["found"] is None
    else:
        assert event["found"].startswith(found), event
    assert "sandboxctl restart" in event["hint"]
    assert record(daemon, "py")["output_fd"] is None
    assert daemon.stop() == 0
