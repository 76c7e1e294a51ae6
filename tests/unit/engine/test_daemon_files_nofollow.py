"""The log and state files of the daemon: a planted symlink is never followed (issue 18)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor.engine.output import RotatingLog
from supervisor.engine.store import Store, UnitRecord
from supervisor.logtail import read_log


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_text("untouched\n")
    return path


def _pipe_with(data: bytes) -> tuple[int, int]:
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK)
    os.write(write_fd, data)
    return read_fd, write_fd


def test_a_planted_log_symlink_drops_output_and_resumes_once_removed(
    tmp_path: Path, victim: Path
) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    (logs / "web.log").symlink_to(victim)
    log = RotatingLog(logs / "web.log", None, 1)
    read_fd, write_fd = _pipe_with(b"secret output\n")
    try:
        with capture_logs() as events:
            assert log.take(read_fd) == len(b"secret output\n")  # read and dropped
        assert victim.read_text() == "untouched\n"
        assert (logs / "web.log").is_symlink(), "left alone for whoever put it there"
        (warning,) = [e for e in events if e["event"] == "unit.output_dropping"]
        assert warning["file"] == str(logs / "web.log")
        assert warning["error"] == "is a symlink, and sandboxd follows none here"
        (logs / "web.log").unlink()
        os.write(write_fd, b"after\n")
        log.take(read_fd)
    finally:
        log.close()
        os.close(read_fd)
        os.close(write_fd)
    assert (logs / "web.log").read_text() == (
        "[sandboxd: 14 bytes of output dropped: is a symlink, and sandboxd follows none here]\n"
        "after\n"
    )
    assert victim.read_text() == "untouched\n"


def test_rotation_moves_a_planted_symlink_and_never_writes_through_it(
    tmp_path: Path, victim: Path
) -> None:
    (tmp_path / "u.log.1").symlink_to(victim)
    log = RotatingLog(tmp_path / "u.log", max_size=10, keep=3)
    for chunk in (b"a" * 10, b"b" * 10, b"c" * 10):
        log.write(chunk)
    log.close()
    assert victim.read_text() == "untouched\n"
    assert (tmp_path / "u.log.3").is_symlink()  # renamed twice, as a link
    assert (tmp_path / "u.log.2").read_bytes() == b"a" * 10


def test_the_log_dir_and_file_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        log = RotatingLog(tmp_path / "log" / "web.log", None, 1)
        log.write(b"x\n")
        log.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "log").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "log" / "web.log").stat().st_mode) == 0o640


def test_the_api_does_not_read_a_log_through_a_planted_symlink(
    tmp_path: Path, victim: Path
) -> None:
    """The daemon reads logs as root for every member of the read group."""
    (tmp_path / "web.log").write_text("mine\n")
    (tmp_path / "web.log.1").symlink_to(victim)
    (tmp_path / "web.log.2").symlink_to(victim)

    async def read() -> bytes:
        return b"".join([chunk async for chunk in read_log(str(tmp_path / "web.log"))])

    assert asyncio.run(read()) == b"mine\n"


def test_the_state_store_never_follows_a_planted_symlink(tmp_path: Path, victim: Path) -> None:
    store = Store(tmp_path / "state")
    store.prepare()
    (store.dir / "web.json").symlink_to(victim)
    (store.dir / ".web.json.tmp").symlink_to(victim)
    victim.write_text(json.dumps({"format": "sandboxd-unit-state/1", "unit": "web", "state": "x"}))
    before = victim.read_text()
    with capture_logs() as events:
        assert store.load_all() == {}, "a linked file is not read as the unit's state"
    assert [e["event"] for e in events] == ["store.ignored"]
    store.save(UnitRecord("web", "running"))
    assert store.flush(30)  # written on the state writer thread
    assert victim.read_text() == before
    assert not (store.dir / "web.json").is_symlink()
    assert store.load_all()["web"].state == "running"


def test_the_state_dir_is_made_private_again(tmp_path: Path) -> None:
    (tmp_path / "state" / "units").mkdir(parents=True, mode=0o777)
    os.chmod(tmp_path / "state" / "units", 0o777)
    Store(tmp_path / "state").prepare()
    assert stat.S_IMODE((tmp_path / "state" / "units").stat().st_mode) == 0o700
