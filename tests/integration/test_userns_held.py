"""A unit's user namespace is made once per id range and held across its launches
(linux/helduserns.py): every launch of the unit joins it, two units never share one, it goes
with its range (unit removed) or with a daemon that stops its units, leaving no mount behind,
and after a kill -9 of the daemon the next one re-adopts the run and launches into the same."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor.linux import helduserns
from tests.integration.test_userns import SHOW, _configure, _range, ctl
from tests.support.daemon_kit import Daemon
from tests.support.requires import requires_root
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.root, requires_root]


def _held(d: Daemon, name: str) -> Path:
    first, last = _range(d, name)
    return Path(helduserns.path_for(str(d.state / "userns"), first, last - first + 1))


def _userns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/user").st_ino


def _mounts_under(path: Path) -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(str(path))]


def test_every_launch_of_a_unit_joins_its_own_held_namespace(daemon: Daemon) -> None:
    _configure(daemon)
    daemon.write_unit("a", SHOW)
    daemon.write_unit("b", SHOW)
    daemon.start()
    running = {n: daemon.wait_unit(n, lambda u: u["state"] == "running") for n in ("a", "b")}
    held = {n: _held(daemon, n) for n in running}
    for name, unit in running.items():
        assert helduserns.is_held(str(held[name])), name
        assert _userns_inode(unit["pid"]) == os.stat(held[name]).st_ino
        assert (held[name].parent.stat().st_mode & 0o777) == 0o700  # only root may enter it
    # Two units, two namespaces (and two ranges).
    assert os.stat(held["a"]).st_ino != os.stat(held["b"]).st_ino
    # A restart joins the same namespace; it still maps root inside to the unit's base.
    assert ctl(daemon, "restart", "a").returncode == 0
    again = daemon.wait_unit(
        "a", lambda u: u["state"] == "running" and u["pid"] != running["a"]["pid"]
    )
    assert _userns_inode(again["pid"]) == os.stat(held["a"]).st_ino
    first = _range(daemon, "a")[0]
    wait_for(lambda: "uid=" in daemon.output("a"), 30, lambda: daemon.output("a"))
    assert daemon.output("a").split()[-4:] == ["uid=0", "0", str(first), "65536"]


def test_a_held_namespace_goes_with_its_unit_and_survives_a_daemon_kill(daemon: Daemon) -> None:
    _configure(daemon)
    daemon.write_unit("keep", SHOW)
    daemon.write_unit("gone", SHOW)
    daemon.start()
    keep = daemon.wait_unit("keep", lambda u: u["state"] == "running")
    daemon.wait_unit("gone", lambda u: u["state"] == "running")
    held_keep, held_gone = _held(daemon, "keep"), _held(daemon, "gone")
    inode = os.stat(held_keep).st_ino
    # Removed (stopped first: a run still stopping keeps its range): its namespace goes, no
    # mount of it is left on the host; the other unit's stays.
    assert ctl(daemon, "stop", "gone").returncode == 0
    daemon.remove_unit("gone")
    assert ctl(daemon, "reload").returncode == 0
    assert not held_gone.exists() and _mounts_under(held_gone) == []
    assert helduserns.is_held(str(held_keep))
    # kill -9: the next daemon re-adopts the run, and a restart under it joins the same one.
    daemon.wait_recorded()
    daemon.kill9()
    daemon.start()
    daemon.wait_unit("keep", lambda u: u["state"] == "running" and u["pid"] == keep["pid"])
    assert ctl(daemon, "restart", "keep").returncode == 0
    again = daemon.wait_unit("keep", lambda u: u["state"] == "running" and u["pid"] != keep["pid"])
    assert _userns_inode(again["pid"]) == inode == os.stat(held_keep).st_ino
    # A daemon that stops its units (on_exit = "stop") leaves no held namespace behind.
    assert daemon.stop() == 0
    assert helduserns.listed(str(daemon.state / "userns")) == []
    assert _mounts_under(daemon.state / "userns") == []


def test_a_unit_removed_while_running_gives_its_range_back_once_its_run_ends(
    daemon: Daemon,
) -> None:
    """Removed while running, the unit keeps its range while its run stops; once the run has
    ended the range and its held namespace go at once, not at some later reload (the fault
    storm found them left when no reload followed)."""
    _configure(daemon)
    slow = SHOW.replace('stop_timeout = "500ms"', 'stop_timeout = "2s"\nstop_signal = "SIGCONT"')
    daemon.write_unit("gone", slow)  # ignores its stop signal: its run outlives the reload
    daemon.start()
    daemon.wait_unit("gone", lambda u: u["state"] == "running")
    held = _held(daemon, "gone")
    assert helduserns.is_held(str(held))
    daemon.remove_unit("gone")
    assert ctl(daemon, "reload").returncode == 0
    wait_for(lambda: "gone" not in daemon.status(), 30, daemon.status)
    # No other reload: the end of the run gave the range back.
    wait_for(lambda: not held.exists(), 30, lambda: str(_mounts_under(held.parent)))
    assert _mounts_under(held) == []
    picks = (daemon.data / "userns.json").read_text()
    assert "gone" not in picks, picks
    released = [e for e in daemon.events("unit.userns_released") if e.get("unit") == "gone"]
    assert len(released) == 1, released
