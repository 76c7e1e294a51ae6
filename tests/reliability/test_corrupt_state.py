"""Corrupt or hostile state (issue 29), each planted before a real daemon starts.

A state record that is truncated, empty, garbage, of the wrong types or with a spec that no
longer validates is ignored with one `store.ignored` line, and the unit starts from its file.
A record naming a live process that is not in the unit's cgroup (PID reuse, with the right
start time) is never adopted, so that process is never signalled. A state directory, or its
`units/`, replaced by a symlink stops the daemon from starting, with one line naming it, and
the sandboxes the last daemon left running go on until it is put back.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from supervisor.engine.store import FORMAT, Store, UnitRecord
from supervisor.linux import pidfd
from supervisor.unit.loader import UnitLoader
from tests.support.kit import cgroup_version, pid1s, pid_alive, uname, unit_text

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated host process of this test's own, killed by its PID at the end."""
    proc = subprocess.Popen(["/bin/sleep", "100000"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def sleeper(daemon: Any, name: str) -> str:
    return unit_text(["/bin/sleep", "100000"], daemon, name)


def plant(
    daemon: Any, name: str, record: UnitRecord | None = None, raw: bytes | None = None
) -> None:
    """Write `name`'s state record (or `raw` bytes as its file) before the daemon starts."""
    store = Store(daemon.state)
    store.prepare()
    if record is not None:
        store.save(record)
        assert store.flush(30) and not store.unsaved  # written on the state writer thread
    if raw is not None:
        store.path(name).write_bytes(raw)


def a_record(daemon: Any, name: str, **fields: Any) -> UnitRecord:
    """A well-formed record of the unit as its file says, with `fields` set."""
    spec = UnitLoader().load_directory(daemon.units).specs[name]
    return UnitRecord(name, "running", spec=spec.to_json(), spec_hash=spec.hash,
                      restart_hash=spec.restart_hash, **fields)  # fmt: skip


def good_json(daemon: Any, name: str, pid: int) -> dict[str, Any]:
    data = a_record(daemon, name, pid=pid, pid_start=pidfd.start_time(pid),
                    started_at=time.time() - 5).to_json()  # fmt: skip
    assert data["format"] == FORMAT
    return data


# Each case: the file's bytes, given the daemon, the unit and a live pid of an unrelated process.
CASES: dict[str, Callable[[Any, str, int], bytes]] = {
    "truncated": lambda d, n, pid: json.dumps(good_json(d, n, pid)).encode()[:150],
    "empty": lambda d, n, pid: b"",
    "garbage": lambda d, n, pid: bytes(range(256)) * 4,
    # Types a later step would trip over: arithmetic on started_at, a count as a string.
    "wrong-types": lambda d, n, pid: json.dumps(
        {**good_json(d, n, pid), "started_at": "yesterday", "restarts": "3"}
    ).encode(),
    "spec-does-not-validate": lambda d, n, pid: json.dumps(
        {**good_json(d, n, pid), "spec": {"service": {"exec": 42}}}
    ).encode(),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_broken_record_is_ignored_with_one_line(
    rdaemons: Callable[[], Any], bystander: subprocess.Popen[bytes], case: str
) -> None:
    daemon = rdaemons()
    name = uname(daemon, "u")
    daemon.write_unit(name, sleeper(daemon, name))
    # Every broken record names the bystander, alive, with its true start time.
    plant(daemon, name, raw=CASES[case](daemon, name, bystander.pid))
    daemon.start()
    unit = daemon.wait_unit(name, lambda u: u["state"] == "running", 60)
    assert unit["pid"] != bystander.pid  # started from its file, not adopted
    [ignored] = daemon.events("store.ignored")
    assert ignored["path"] == str(daemon.state / "units" / f"{name}.json"), ignored
    assert daemon.stop() == 0
    assert bystander.poll() is None  # never signalled
    assert "Traceback" not in daemon.stderr_path().read_text()


def test_a_reused_pid_outside_the_units_cgroup_is_never_adopted(
    rdaemons: Callable[[], Any], bystander: subprocess.Popen[bytes]
) -> None:
    """A well-formed record, the bystander's pid and true start time, and the unit's cgroup
    empty (it does not exist): the run is `lost`, a new one starts, and stopping the daemon
    (which stops its units) leaves the bystander alone."""
    daemon = rdaemons()
    name = uname(daemon, "u")
    daemon.write_unit(name, sleeper(daemon, name))
    plant(daemon, name, a_record(daemon, name, pid=bystander.pid,
                                 pid_start=pidfd.start_time(bystander.pid),
                                 started_at=time.time() - 5))  # fmt: skip
    daemon.start()
    unit = daemon.wait_unit(name, lambda u: u["state"] == "running", 60)
    assert unit["pid"] != bystander.pid and unit["restarts"] == 1, unit  # lost, restarted
    [refused] = daemon.events("unit.adopt_refused")
    assert refused["pid"] == bystander.pid and "not in the unit's cgroup" in refused["error"]
    assert daemon.stop() == 0
    assert bystander.poll() is None and pid_alive(bystander.pid)


@pytest.mark.parametrize("replaced", ["state", "state/units"])
def test_a_state_dir_replaced_by_a_symlink_stops_the_start_not_the_sandboxes(
    rdaemons: Callable[[], Any], replaced: str
) -> None:
    daemon = rdaemons()
    name = uname(daemon, "u")
    daemon.write_unit(name, sleeper(daemon, name))
    daemon.start()
    pid = daemon.wait_unit(name, lambda u: u["state"] == "running", 60)["pid"]
    daemon.wait_recorded()
    daemon.kill9()  # the sandbox stays, for the next daemon to re-adopt

    link = daemon.base / replaced
    aside = daemon.base / "aside"
    os.rename(link, aside)
    os.symlink(aside, link)
    daemon.start(wait_ready=False)
    assert daemon.proc.wait(60) == 1
    lines = daemon.stderr_path().read_text().splitlines()
    assert lines[-1] == (
        f"sandboxd: state_dir {daemon.state}: {link} is a symlink (to {aside}), and sandboxd "
        + ("follows none here" if replaced == "state" else
           "follows none in its own trees; put the directory itself there")
    ), lines[-1]  # fmt: skip
    assert pid1s(daemon)[name] == [pid]  # the sandbox runs on, untouched

    os.unlink(link)  # put back: the next daemon takes over the same run
    os.rename(aside, link)
    daemon.start()
    again = daemon.wait_unit(name, lambda u: u["state"] == "running", 60)
    assert again["pid"] == pid, again
    assert daemon.stop() == 0
    assert not os.path.exists(aside)
