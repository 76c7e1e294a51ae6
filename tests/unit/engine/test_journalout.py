"""A stream of service output to the journal, line by line (engine/journalout.py), against a fake
journal: the fields of each entry, lines split across reads, long lines, the last line without
a newline, `both` into the log file too, and a journal that takes nothing."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor.engine.journalout import LINE_MAX, JournalStream
from supervisor.engine.output import RotatingLog
from supervisor.linux.journal import PRIORITY_STDERR, PRIORITY_STDOUT, JournalSocket
from tests.support.fakejournal import FakeJournal


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeJournal]:
    j = FakeJournal(tmp_path / "journal.sock")
    yield j
    j.close()


@pytest.fixture
def sender(fake: FakeJournal) -> Iterator[JournalSocket]:
    s = JournalSocket(str(fake.path))
    yield s
    s.close()


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):  # a test closed it already
            os.close(fd)


def stream(tmp_path: Path, sender: JournalSocket, priority: int, both: bool) -> JournalStream:
    log_dir = tmp_path / "logs"
    return JournalStream(sender, RotatingLog(log_dir / "web.log", None, 3), priority, both=both)


def drain(s: JournalStream, fd: int) -> None:
    while True:
        try:
            if not s.take(fd):
                return
        except BlockingIOError:
            return


def messages(fake: FakeJournal, count: int) -> list[bytes]:
    return [dict(fake.receive()[0])["MESSAGE"] for _ in range(count)]


def test_each_line_is_an_entry_with_the_units_fields(
    tmp_path: Path, fake: FakeJournal, sender: JournalSocket, pipe: tuple[int, int]
) -> None:
    s = stream(tmp_path, sender, PRIORITY_STDERR, both=False)
    s.pid = os.getpid()
    os.write(pipe[1], b"first\nsecond\n")
    drain(s, pipe[0])
    fields, pid = fake.receive()
    assert fields == [("MESSAGE", b"first"), ("PRIORITY", b"3"),
                      ("SYSLOG_IDENTIFIER", b"web"), ("SANDBOXD_UNIT", b"web")]  # fmt: skip
    assert pid == os.getpid()
    assert messages(fake, 1) == [b"second"]
    assert not (tmp_path / "logs" / "web.log").exists(), "journal only: no log file"


def test_a_line_split_across_reads_is_one_entry_and_the_last_goes_at_close(
    tmp_path: Path, fake: FakeJournal, sender: JournalSocket, pipe: tuple[int, int]
) -> None:
    s = stream(tmp_path, sender, PRIORITY_STDOUT, both=False)
    os.write(pipe[1], b"hel")
    drain(s, pipe[0])
    os.write(pipe[1], b"lo\nno newline")
    drain(s, pipe[0])
    assert messages(fake, 1) == [b"hello"]
    os.close(pipe[1])
    drain(s, pipe[0])
    s.close()
    assert messages(fake, 1) == [b"no newline"]


def test_a_line_longer_than_line_max_is_split(
    tmp_path: Path, fake: FakeJournal, sender: JournalSocket, pipe: tuple[int, int]
) -> None:
    s = stream(tmp_path, sender, PRIORITY_STDOUT, both=False)
    view = memoryview(b"x" * (2 * LINE_MAX + 10) + b"\n")
    while view:  # more than the pipe holds: write and drain in turn
        view = view[os.write(pipe[1], view) :]
        drain(s, pipe[0])
    got = messages(fake, 3)
    assert got == [b"x" * LINE_MAX, b"x" * LINE_MAX, b"x" * 10]


def test_both_writes_the_same_bytes_into_the_log_file(
    tmp_path: Path, fake: FakeJournal, sender: JournalSocket, pipe: tuple[int, int]
) -> None:
    s = stream(tmp_path, sender, PRIORITY_STDOUT, both=True)
    os.write(pipe[1], b"one\ntwo\n")
    drain(s, pipe[0])
    s.close()
    assert messages(fake, 2) == [b"one", b"two"]
    assert (tmp_path / "logs" / "web.log").read_bytes() == b"one\ntwo\n"
    assert s.written == 8


def test_a_journal_that_takes_nothing_drops_and_counts_and_says_so_once(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    gone = JournalSocket(str(tmp_path / "no-journal.sock"))
    try:
        s = stream(tmp_path, gone, PRIORITY_STDOUT, both=True)
        with capture_logs() as logs:
            os.write(pipe[1], b"a\nbb\n")
            drain(s, pipe[0])
        assert [e["event"] for e in logs] == ["unit.journal_dropping"]
        assert s.file.dropped == 5  # the lines with their newlines
        assert (tmp_path / "logs" / "web.log").read_bytes() == b"a\nbb\n", "the file still has them"
    finally:
        gone.close()
