"""A stalled state disk (issue 29): writes to the state dir hang for 10 s, and supervision goes on.

The state dir is a real FUSE filesystem whose writes stall while the test says so
(tests/support/stallfs.py). State records are written on the daemon's state writer thread,
so during the stall `status` and `stop` answer at once, a service killed with SIGKILL is
restarted and an OOM kill is handled; once writes return, the records on disk are the latest
ones. A daemon SIGKILLed during the stall leaves the records from before it, and the next
daemon goes by the units' cgroups as well: the run the records do not know of is killed and
the unit started once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kit import cgroup_version, pid1s, uname, unit_text, wait_for
from tests.support.stallfs import Stall, fuse_missing, stalling_fs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
    pytest.mark.skipif(fuse_missing() is not None, reason=f"a stalling fs: {fuse_missing()}"),
]

STALL_SECONDS = 10.0
ALWAYS = {"policy": "always", "delay": "100ms"}


def record(daemon: Any, unit: str) -> dict[str, Any]:
    """The unit's record on disk, {} if there is none (also for the instant of a rename over it
    through FUSE, which a reader polling the file can meet)."""
    path: Path = daemon.state / "units" / f"{unit}.json"
    try:
        return dict(json.loads(path.read_bytes()))
    except FileNotFoundError:
        return {}


def only_stuck_threads(pid: int) -> bool:
    """True once every thread of `pid` has exited (zombie, gone) or is stuck in the kernel (D)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        states = [Path(f"/proc/{pid}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()[0]
                  for t in tasks]  # fmt: skip
    except (FileNotFoundError, ProcessLookupError):
        return True
    return all(state in "ZDX" for state in states)


def status_latency(daemon: Any) -> float:
    began = time.monotonic()
    daemon.status()
    return time.monotonic() - began


def two_units(daemon: Any) -> tuple[str, str]:
    victim, bystander = uname(daemon, "victim"), uname(daemon, "bystander")
    for name in (victim, bystander):
        daemon.write_unit(name, unit_text(["/bin/sleep", "100000"], daemon, name, restart=ALWAYS))
    return victim, bystander


def started_and_recorded(daemon: Any, *units: str) -> dict[str, dict[str, Any]]:
    """Each unit running, and its record on disk naming that run."""
    running = {u: daemon.wait_unit(u, lambda s: s["state"] == "running", 60) for u in units}
    for unit, seen in running.items():
        wait_for(lambda unit=unit, pid=seen["pid"]: record(daemon, unit).get("pid") == pid, 60)
    return running


def restarted(daemon: Any, unit: str, killed: int) -> dict[str, Any]:
    """SIGKILL the unit's PID 1 `killed`: the new run, seen in time."""
    killed_at = time.monotonic()
    os.kill(killed, signal.SIGKILL)
    again = daemon.wait_unit(unit, lambda u: u["state"] == "running" and u["pid"] != killed, 60)
    assert again["last_exit"] == "signal:SIGKILL", again
    assert time.monotonic() - killed_at < 5
    return again


@pytest.fixture
def stalled_state(rdaemons: Callable[[], Any]) -> Iterator[tuple[Any, Stall]]:
    daemon = rdaemons()
    with stalling_fs(daemon.state) as fs:
        try:
            yield daemon, fs
        finally:  # before the unmount: a daemon must not hold the filesystem
            fs.resume()
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()


def test_a_stalled_state_disk_never_freezes_supervision(stalled_state: tuple[Any, Stall]) -> None:
    daemon, fs = stalled_state
    victim, bystander = two_units(daemon)
    daemon.start()
    first = started_and_recorded(daemon, victim, bystander)

    fs.stall()
    stalled_at = time.monotonic()
    # An exit during the stall is seen and the unit restarted: its records (exited, starting,
    # running) wait on the writer thread, the supervision does not.
    again = restarted(daemon, victim, first[victim]["pid"])
    # An operation answers without waiting for its record (documented: README, Faults).
    began = time.monotonic()
    assert daemon.request("POST", f"/v1/units/{bystander}/stop")[0] == 200
    assert time.monotonic() - began < 5
    daemon.wait_unit(bystander, lambda u: u["state"] == "stopped", 60)
    # An OOM kill during the stall is handled on time (a unit added by a reload: its records
    # wait too).
    hog = uname(daemon, "hog")
    daemon.write_unit(hog, unit_text(
        ["/usr/bin/python3", "-c", "b = b'\\1' * (200 << 20)"], daemon, hog,
        resources={"memory_max": "48M", "swap_max": "0"}, oom={"policy": "stop"},
    ))  # fmt: skip
    began = time.monotonic()
    assert daemon.request("POST", "/v1/reload")[0] == 200
    oomed = daemon.wait_unit(hog, lambda u: u["state"] == "exited", 60)
    assert oomed["last_exit"] == "oom-killed" and oomed["oom_kills"] >= 1, oomed
    assert time.monotonic() - began < 5
    # Nothing reached the disk: the stall is real, the records are the ones from before it.
    assert record(daemon, victim)["pid"] == first[victim]["pid"]
    assert record(daemon, bystander)["state"] == "running"
    # `status` keeps answering at once for the rest of the stall.
    latencies = [status_latency(daemon)]
    while time.monotonic() - stalled_at < STALL_SECONDS:
        latencies.append(status_latency(daemon))
    assert max(latencies) < 1.0, sorted(latencies)[-5:]

    fs.resume()
    # The latest records land: each unit's last state, not one of those in between.
    wait_for(lambda: record(daemon, victim).get("pid") == again["pid"]
             and record(daemon, bystander).get("state") == "stopped"
             and record(daemon, hog).get("last_exit") == "oom-killed", 60,
             lambda: f"{record(daemon, victim)} {record(daemon, bystander)}")  # fmt: skip
    assert record(daemon, victim)["state"] == "running"
    assert record(daemon, hog)["state"] == "exited"
    assert sorted(p.name for p in (daemon.state / "units").iterdir()) == sorted(
        [f"{victim}.json", f"{bystander}.json", f"{hog}.json"]
    )  # no temp file left
    assert daemon.events("store.save_failed") == []  # a stall is not a failure
    assert "Traceback" not in daemon.stderr_path().read_text()
    assert daemon.stop() == 0


# The killed daemon's sandbox must go to init, which reaps it: a pytest made a subreaper by a
# launcher test would keep it a zombie, and it would never leave /proc.
@pytest.mark.usefixtures("not_a_subreaper")
def test_a_daemon_killed_during_a_state_stall_is_followed_by_one_run_per_unit(
    stalled_state: tuple[Any, Stall],
) -> None:
    daemon, fs = stalled_state
    victim, bystander = two_units(daemon)
    # A host process of nobody's: the next daemon must leave it alone.
    unrelated = subprocess.Popen(["/bin/sleep", "100000"])
    try:
        daemon.start()
        first = started_and_recorded(daemon, victim, bystander)

        fs.stall()
        second = restarted(daemon, victim, first[victim]["pid"])
        assert record(daemon, victim)["pid"] == first[victim]["pid"]  # the new run unrecorded
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGKILL)  # with the writer thread stuck in a state write
        # The kernel waits out a write already handed to the filesystem (FUSE, like a hard NFS
        # mount): the daemon is gone but for that thread, which dies as the write returns,
        # before it can rename anything over a record.
        wait_for(lambda: only_stuck_threads(daemon.proc.pid), 60)
        fs.resume()  # the next daemon finds a working state dir and the records from before
        daemon.proc.wait(60)
        assert record(daemon, victim)["pid"] == first[victim]["pid"]

        daemon.start()
        third = daemon.wait_unit(victim, lambda u: u["state"] == "running", 60)
        # The record names a run that is gone: it is lost, and the run it did not know of is
        # found in the unit's cgroup and killed before the unit starts once more.
        assert third["pid"] not in (first[victim]["pid"], second["pid"]), third
        assert pid1s(daemon)[victim] == [third["pid"]]  # never twice
        wait_for(lambda: not os.path.exists(f"/proc/{second['pid']}"), 60)
        killed = [e for e in daemon.events("unit.leftover_killed") if e.get("unit") == victim]
        assert len(killed) == 1 and second["pid"] in killed[0]["pids"], killed
        # The bystander's record was whole and current: re-adopted, never restarted.
        assert daemon.unit(bystander)["pid"] == first[bystander]["pid"]
        assert pid1s(daemon)[bystander] == [first[bystander]["pid"]]
        assert unrelated.poll() is None  # untouched
        wait_for(lambda: record(daemon, victim).get("pid") == third["pid"], 60)
        assert "Traceback" not in daemon.stderr_path().read_text()
        assert daemon.stop() == 0
    finally:
        unrelated.kill()
        unrelated.wait(30)


def test_an_exiting_daemon_waits_for_a_stalled_state_disk_a_bounded_time(
    stalled_state: tuple[Any, Stall],
) -> None:
    daemon, fs = stalled_state
    victim, bystander = two_units(daemon)
    daemon.start()
    first = started_and_recorded(daemon, victim, bystander)

    fs.stall()
    restarted(daemon, victim, first[victim]["pid"])  # records now wait on the writer thread
    daemon.signal(signal.SIGTERM)  # stops both units: their last records wait as well
    # The daemon gives up on them after 5 s and says so, during the stall.
    wait_for(lambda: bool(daemon.events("daemon.state_unflushed")), 60,
             lambda: daemon.stderr_path().read_text()[-2000:])  # fmt: skip
    [unflushed] = daemon.events("daemon.state_unflushed")
    assert unflushed["timeout"] == 5.0 and unflushed["waiting"] >= 1, unflushed
    assert not pid1s(daemon).get(victim) and not pid1s(daemon).get(bystander)  # stopped
    # It is gone once the stuck write returns (the kernel waits that write out), with status 0,
    # and the records are the ones from before the stall, whole.
    fs.resume()
    assert daemon.proc is not None and daemon.proc.wait(60) == 0
    assert record(daemon, victim)["pid"] == first[victim]["pid"]
    assert record(daemon, bystander)["pid"] == first[bystander]["pid"]
