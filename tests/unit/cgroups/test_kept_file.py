"""KeptFile: a view file read through one kept fd, afresh each time, errors naming the path."""

from __future__ import annotations

import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.cgroups import files
from supervisor.errors import CgroupError
from tests.support.fds import open_fds_on


@pytest.fixture(autouse=True)
def keeping(monkeypatch: pytest.MonkeyPatch) -> None:
    # Keeping is one switch per process (files.stop_keeping); an engine test that runs a launch
    # short of fds turns it off for good, so each test here starts from a fresh daemon's state.
    monkeypatch.setattr(files, "_keeping", True)


@pytest.fixture
def current(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "memory.current"
    path.write_text("4096\n")
    yield path


def test_reads_afresh_through_one_kept_fd(current: Path) -> None:
    kept = files.KeptFile(str(current))
    assert kept.read_int() == 4096
    assert open_fds_on(current) == 1
    files.write(str(current), 8192)  # as the kernel's value moves
    assert kept.read_int() == 8192 and kept.read() == "8192"
    assert open_fds_on(current) == 1
    kept.close()
    assert open_fds_on(current) == 0


def test_a_long_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "blkio.throttle.io_service_bytes_recursive"
    text = "".join(f"8:{i} Read {i}\n" for i in range(20000))  # > 64 KiB
    path.write_text(text)
    kept = files.KeptFile(str(path))
    assert kept.read() == text.strip()
    assert kept.read() == text.strip()
    kept.close()


def test_errors_name_the_file(tmp_path: Path) -> None:
    missing = files.KeptFile(str(tmp_path / "pids.current"))
    with pytest.raises(CgroupError, match=r"failed to read .*pids\.current: No such file"):
        missing.read()
    garbage = tmp_path / "cpuacct.usage"
    garbage.write_text("lots\n")
    kept = files.KeptFile(str(garbage))
    with pytest.raises(CgroupError, match=r"unexpected content in .*cpuacct\.usage: 'lots'"):
        kept.read_int()
    kept.close()


def test_no_fd_is_kept_past_half_the_fd_limit(
    current: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    monkeypatch.setattr(resource, "getrlimit", lambda _: (8, hard))  # every fd is past 4
    kept = files.KeptFile(str(current))
    assert kept.read_int() == 4096
    assert open_fds_on(current) == 0
    files.write(str(current), 1)
    assert kept.read_int() == 1


def test_stop_keeping_gives_every_fd_back_and_keeps_none_after(tmp_path: Path) -> None:
    """A launch short of fds makes the views give their kept fds back for good."""
    path = tmp_path / "memory.current"
    path.write_text("4096\n")
    kept = files.KeptFile(str(path))
    assert kept.read_int() == 4096 and kept._fd is not None
    files.stop_keeping()
    assert kept._fd is None  # closed
    path.write_text("8192\n")
    again = files.KeptFile(str(path))
    assert kept.read_int() == 8192 and again.read_int() == 8192
    assert kept._fd is None and again._fd is None  # read by open and close now


def test_views_that_went_quiet_give_their_fds_back_and_keep_them_again(current: Path) -> None:
    """Kept fds cost the kernel a page each (their seq_file's buffer): the first check after
    a read keeps them, the next one with no read in between closes them, and the next read
    keeps an fd again (and says so, for the engine's timer)."""
    told: list[int] = []
    files.on_kept(lambda: told.append(1))
    try:
        kept = files.KeptFile(str(current))
        assert kept.read_int() == 4096 and open_fds_on(current) == 1 and told == [1]
        assert not files.release_if_unread()  # read since the last check: kept
        assert open_fds_on(current) == 1
        assert files.release_if_unread()  # nothing read since: closed
        assert open_fds_on(current) == 0
        files.write(str(current), 8192)
        assert kept.read_int() == 8192 and open_fds_on(current) == 1 and told == [1, 1]
        kept.read_int()  # through the kept fd: no new fd, nobody told
        assert told == [1, 1]
        kept.close()
    finally:
        files.on_kept(None)
