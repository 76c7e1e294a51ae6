"""A unit's user namespace is made once per id range and held across its launches
(linux/helduserns.py): every launch of the unit joins it, two units never share one, it goes
with its range (unit removed) or with a daemon that stops its units, leaving no mount behind,
and after a kill -9 of the daemon the next one re-adopts the run and launches into the same.
They are held in the daemon's holder namespace, not in the host's mount table: a started unit
adds no host mount, and nothing of the holder is within a sandbox's reach."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from supervisor.linux import helduserns
from supervisor.linux.syscalls import CLONE_NEWNS, MS_BIND, REAL, HolderRoot, LibcSyscalls
from supervisor.unit.userns import BLOCK
from tests.integration.test_userns import POOL_FIRST, POOL_LAST, SHOW, _configure, _range, ctl
from tests.support.daemon_kit import Daemon
from tests.support.requires import requires_root
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.root, requires_root]


def _name(d: Daemon, name: str) -> str:
    """The file the unit's range is held at, in the daemon's holder."""
    first, last = _range(d, name)
    return os.path.basename(helduserns.path_for("", first, last - first + 1))


def _held_inodes(d: Daemon) -> dict[str, int]:
    """Each file in the daemon's holder: the inode of the user namespace held there."""
    directory = str(d.state / "userns")
    if not helduserns.is_holder(directory):
        return {}
    holder = helduserns.Holder.open(directory)
    try:
        inodes = {}
        for name in holder.names():
            fd = holder.open_ns(name)
            assert fd is not None, f"{name}: a file in the holder with no namespace on it"
            inodes[name] = os.fstat(fd).st_ino
            os.close(fd)
        return inodes
    finally:
        holder.close()


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
    held = {n: _name(daemon, n) for n in running}
    inodes = _held_inodes(daemon)
    assert sorted(inodes) == sorted(held.values())
    for name, unit in running.items():
        assert _userns_inode(unit["pid"]) == inodes[held[name]]
    assert ((daemon.state / "userns").stat().st_mode & 0o777) == 0o700  # only root may enter
    # Two units, two namespaces (and two ranges).
    assert inodes[held["a"]] != inodes[held["b"]]
    # A restart joins the same namespace; it still maps root inside to the unit's base.
    assert ctl(daemon, "restart", "a").returncode == 0
    again = daemon.wait_unit(
        "a", lambda u: u["state"] == "running" and u["pid"] != running["a"]["pid"]
    )
    assert _userns_inode(again["pid"]) == inodes[held["a"]] == _held_inodes(daemon)[held["a"]]
    first = _range(daemon, "a")[0]
    # The output holds both runs': wait for the second run's echo and its uid_map line.
    wait_for(lambda: len(daemon.output("a").split("uid=")) == 3
             and len(daemon.output("a").split("uid=")[-1].split()) >= 3, 30,
             lambda: daemon.output("a"))  # fmt: skip
    assert daemon.output("a").split()[-4:] == ["uid=0", "0", str(first), "65536"]


def test_a_held_namespace_goes_with_its_unit_and_survives_a_daemon_kill(daemon: Daemon) -> None:
    _configure(daemon)
    daemon.write_unit("keep", SHOW)
    daemon.write_unit("gone", SHOW)
    daemon.start()
    keep = daemon.wait_unit("keep", lambda u: u["state"] == "running")
    daemon.wait_unit("gone", lambda u: u["state"] == "running")
    held_keep, held_gone = _name(daemon, "keep"), _name(daemon, "gone")
    inode = _held_inodes(daemon)[held_keep]
    assert held_gone in _held_inodes(daemon)
    # Removed (stopped first: a run still stopping keeps its range): its namespace goes; the
    # other unit's stays.
    assert ctl(daemon, "stop", "gone").returncode == 0
    daemon.remove_unit("gone")
    assert ctl(daemon, "reload").returncode == 0
    assert sorted(_held_inodes(daemon)) == [held_keep]
    # kill -9: the next daemon re-adopts the run, and a restart under it joins the same one.
    daemon.wait_recorded()
    daemon.kill9()
    daemon.start()
    daemon.wait_unit("keep", lambda u: u["state"] == "running" and u["pid"] == keep["pid"])
    assert ctl(daemon, "restart", "keep").returncode == 0
    again = daemon.wait_unit("keep", lambda u: u["state"] == "running" and u["pid"] != keep["pid"])
    assert _userns_inode(again["pid"]) == inode == _held_inodes(daemon)[held_keep]
    # A daemon that stops its units (on_exit = "stop") leaves no held namespace behind, nor
    # their holder.
    assert daemon.stop() == 0
    assert not helduserns.is_holder(str(daemon.state / "userns"))
    assert os.listdir(daemon.state / "userns") == []
    assert _mounts_under(daemon.state / "userns") == []


def test_the_holders_stamp_moves_when_a_launch_holds_a_new_namespace(daemon: Daemon) -> None:
    """What lets a reload skip listing the holder (engine/idranges.py): its directory's stamp,
    read through the daemon's kept root fd (O_PATH), moves when a launch makes a file there."""
    _configure(daemon)
    daemon.write_unit("first", SHOW)
    daemon.start()
    daemon.wait_unit("first", lambda u: u["state"] == "running")
    holder = helduserns.Holder.open(str(daemon.state / "userns"))
    try:
        before = holder.stamp()
        assert before is not None and holder.stamp() == before
        daemon.write_unit("second", SHOW)
        assert ctl(daemon, "reload").returncode == 0
        daemon.wait_unit("second", lambda u: u["state"] == "running")
        assert _name(daemon, "second") in holder.names()
        assert holder.stamp() != before
    finally:
        holder.close()


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
    held = _name(daemon, "gone")
    assert held in _held_inodes(daemon)
    daemon.remove_unit("gone")
    assert ctl(daemon, "reload").returncode == 0
    wait_for(lambda: "gone" not in daemon.status(), 30, daemon.status)
    # No other reload: the end of the run gave the range back.
    wait_for(lambda: held not in _held_inodes(daemon), 30, lambda: str(_held_inodes(daemon)))
    picks = (daemon.data / "userns.json").read_text()
    assert "gone" not in picks, picks
    released = [e for e in daemon.events("unit.userns_released") if e.get("unit") == "gone"]
    assert len(released) == 1, released


def _our_mounts(d: Daemon) -> list[str]:
    """The host's mounts under this daemon's directories: other engineers' tests change the
    rest of the host's table meanwhile."""
    return _mounts_under(d.base)


def test_a_started_unit_adds_no_mount_to_the_hosts_table(daemon: Daemon) -> None:
    _configure(daemon)
    # Room for 21 units (a block each), none of it any host user's.
    text = daemon.config.read_text().replace(
        f"{POOL_FIRST}-{POOL_LAST}", f"{64 * BLOCK}-{96 * BLOCK - 1}"
    )
    daemon.config.write_text(text)
    daemon.write_unit("first", SHOW)
    daemon.start()
    daemon.wait_unit("first", lambda u: u["state"] == "running")
    holder = helduserns.holder_path(str(daemon.state / "userns"))
    assert _our_mounts(daemon) == [holder]  # one mount, however many units
    names = [f"u{i}" for i in range(20)]
    for name in names:
        daemon.write_unit(name, SHOW)
    assert ctl(daemon, "reload").returncode == 0
    running = {n: daemon.wait_unit(n, lambda u: u["state"] == "running") for n in names}
    assert _our_mounts(daemon) == [holder]
    # Each has its own namespace, held in the holder.
    inodes = _held_inodes(daemon)
    assert len(inodes) == 21
    assert {_userns_inode(u["pid"]) for u in running.values()} == {
        inodes[_name(daemon, n)] for n in names
    }
    assert daemon.stop() == 0
    assert _our_mounts(daemon) == []


def test_root_in_a_sandbox_cannot_reach_the_holder(daemon: Daemon) -> None:
    """The holder's mount is in no sandbox's mount namespace (the kernel copies no mount
    namespace's nsfs mount into a new one, and PID 1 detaches the host's tree besides), the
    daemon's /proc entries are not in the sandbox's PID namespace, and the file, were it
    there, is root-only on the host."""
    _configure(daemon)
    state = daemon.state / "userns"
    holder = helduserns.holder_path(str(state))
    probe = (
        '[service]\nexec = ["/bin/sh", "-c", "'
        'echo nsfs=$(grep -c \\" nsfs \\" /proc/self/mountinfo); '
        f"grep -c {state} /proc/self/mountinfo | sed s/^/holder_mounts=/; "
        f"cat {holder} >/dev/null 2>&1 && echo holder=open || echo holder=closed; "
        "ls /proc | grep -c '^[0-9]' | sed s/^/pids=/; "
        'exec sleep 1000"]\nstop_timeout = "500ms"\n'
    )
    daemon.write_unit("probe", probe)
    daemon.start()
    daemon.wait_unit("probe", lambda u: u["state"] == "running")
    wait_for(lambda: "pids=" in daemon.output("probe"), 30, lambda: daemon.output("probe"))
    seen = dict(w.split("=", 1) for w in daemon.output("probe").split() if "=" in w)
    assert seen["nsfs"] == "0" and seen["holder_mounts"] == "0", seen
    assert seen["holder"] == "closed", seen
    assert int(seen["pids"]) <= 4, seen  # its own PID namespace: not the daemon's /proc/PID


def test_an_older_daemons_host_mounts_are_dropped_at_start(daemon: Daemon) -> None:
    """A daemon before the holder bound each range's namespace into the host's table; the
    next one drops those (their ranges' next launches make them again in the holder)."""
    _configure(daemon)
    directory = daemon.state / "userns"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    legacy = Path(helduserns.path_for(str(directory), 64 * BLOCK, BLOCK))
    legacy.touch(mode=0o600)
    userns = REAL.make_userns(f"0 {64 * BLOCK} {BLOCK}\n")
    try:
        REAL.mount(f"/proc/self/fd/{userns}", str(legacy), None, MS_BIND, None)
    finally:
        os.close(userns)
    assert helduserns.is_held(str(legacy))
    daemon.write_unit("a", SHOW)
    daemon.start()
    daemon.wait_unit("a", lambda u: u["state"] == "running")
    assert not legacy.exists()
    assert _our_mounts(daemon) == [helduserns.holder_path(str(directory))]


class _Counting(LibcSyscalls):
    """The real syscalls, counting the setns()es into a mount namespace (holder visits)."""

    def __init__(self) -> None:
        super().__init__()
        self.visits = 0

    def setns(self, fd: int, nstype: int) -> None:
        if nstype == CLONE_NEWNS:
            self.visits += 1
        super().setns(fd, nstype)


def _in_child(body: Callable[[], object]) -> object:
    """`body` run in a forked child (setns into a mount namespace needs a single-threaded
    caller, which pytest is not sure to be); its JSON-able result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reports through the pipe
        code = 1
        try:
            os.close(r)
            os.write(w, json.dumps(body()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, data
    return json.loads(data)


def test_a_launcher_finds_its_held_namespace_through_the_holders_root_without_entering_it(
    tmp_path: Path,
) -> None:
    """With the holder's root (HolderRoot, the fork server's), a launch that finds its range's
    namespace enters no mount namespace, a first launch enters the holder once (to attach),
    and a root of a holder remade since never yields a namespace the new holder does not
    hold."""
    directory = str(tmp_path / "userns")
    path = helduserns.path_for(directory, 0x70000000, 65536)
    name = os.path.basename(path)
    maps = f"0 {0x70000000} 65536\n"
    holder = helduserns.Holder.open(directory)

    def launches() -> dict[str, list[int]]:
        sys_, root = _Counting(), holder.shared()
        seen: dict[str, list[int]] = {}

        def one(label: str, root: HolderRoot | None) -> None:
            before = sys_.visits
            fd = sys_.hold_userns(maps, path, root)
            seen[label] = [sys_.visits - before, os.fstat(fd).st_ino]
            os.close(fd)

        one("first", root)
        one("again", root)
        one("no root", None)
        one("other holder's root", root._replace(ino=root.ino + 1))
        return seen

    try:
        seen = _in_child(launches)
        assert isinstance(seen, dict)
        held = holder.open_ns(name)
        assert held is not None
        inode = os.fstat(held).st_ino
        os.close(held)
        assert seen == {
            "first": [2, inode],  # made, then attached: into the holder and back, once
            "again": [0, inode],  # found through the root: no setns at all
            "no root": [2, inode],  # the way without it still finds the same one
            "other holder's root": [2, inode],  # not trusted: looked up by entering
        }
    finally:
        holder.destroy()
    assert not helduserns.is_holder(directory)
    assert _mounts_under(tmp_path) == []


def test_a_kept_root_of_a_remade_holder_never_yields_a_namespace_the_holder_does_not_hold(
    tmp_path: Path,
) -> None:
    """The holder remade while a fork server keeps the old one's root (stale): a launch with
    it still gets the namespace the new holder holds for its range, never one that only the
    old, unmounted tree had (whether or not the kernel reused the nsfs inode number)."""
    directory = str(tmp_path / "userns")
    path = helduserns.path_for(directory, 0x70000000, 65536)
    maps = f"0 {0x70000000} 65536\n"
    holder = helduserns.Holder.open(directory)
    stale = holder.shared()._replace(fd=os.dup(holder.root))  # as the fork server keeps it
    holder.destroy()
    remade = helduserns.Holder.open(directory)

    def stale_launch() -> list[int]:
        inodes = []
        for _ in range(2):  # the first makes and holds it, the second must find that one
            fd = REAL.hold_userns(maps, path, stale)
            inodes.append(os.fstat(fd).st_ino)
            os.close(fd)
        return inodes

    try:
        got = _in_child(stale_launch)
        fresh = remade.open_ns(os.path.basename(path))
        assert fresh is not None
        assert got == [os.fstat(fresh).st_ino] * 2
        os.close(fresh)
    finally:
        os.close(stale.fd)
        remade.destroy()
    assert not helduserns.is_holder(directory)
    assert _mounts_under(tmp_path) == []
