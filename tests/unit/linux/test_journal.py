"""The native journal protocol against a fake journal: a bound AF_UNIX datagram socket in a temp
dir, read as journald reads it (the datagram or the memfd it carries, and the credentials)."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.linux import journal
from tests.support.fakejournal import FakeJournal, parse


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeJournal]:
    j = FakeJournal(tmp_path / "socket")
    yield j
    j.close()


def test_plain_fields_encode_as_key_equals_value() -> None:
    entry = journal.encode([("MESSAGE", b"hello"), ("PRIORITY", b"6")])
    assert entry == b"MESSAGE=hello\nPRIORITY=6\n"


def test_a_value_with_a_newline_takes_the_binary_form() -> None:
    entry = journal.encode([("MESSAGE", b"a\nb")])
    assert entry == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\n"
    assert parse(entry) == [("MESSAGE", b"a\nb")]


@pytest.mark.parametrize("name", ["message", "_PID", "", "A" * 65, "A-B", "A=B"])
def test_field_names_journald_refuses_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a journal field name"):
        journal.encode([(name, b"x")])


def test_an_entry_reaches_the_journal_with_the_senders_pid(fake: FakeJournal) -> None:
    sender = journal.JournalSocket(str(fake.path))
    try:
        sender.send(journal.encode([("MESSAGE", b"hi"), ("SANDBOXD_UNIT", b"web")]))
        assert fake.receive() == ([("MESSAGE", b"hi"), ("SANDBOXD_UNIT", b"web")], os.getpid())
    finally:
        sender.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="naming another pid needs CAP_SYS_ADMIN (root)")
def test_root_sends_as_another_process(fake: FakeJournal) -> None:
    child = subprocess.Popen(["sleep", "60"])
    sender = journal.JournalSocket(str(fake.path))
    try:
        sender.send(journal.encode([("MESSAGE", b"from the child")]), pid=child.pid)
        assert fake.receive()[1] == child.pid
    finally:
        sender.close()
        child.kill()
        child.wait()


def test_a_gone_pid_falls_back_to_the_daemons_own(fake: FakeJournal) -> None:
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: its pid names nobody now (ESRCH), or EPERM without root
    sender = journal.JournalSocket(str(fake.path))
    try:
        sender.send(journal.encode([("MESSAGE", b"late")]), pid=child.pid)
        assert fake.receive() == ([("MESSAGE", b"late")], os.getpid())
    finally:
        sender.close()


def test_an_entry_too_big_for_a_datagram_goes_as_a_sealed_memfd(fake: FakeJournal) -> None:
    big = os.urandom(1 << 20).replace(b"\n", b"x")  # over any datagram the socket allows
    sender = journal.JournalSocket(str(fake.path))
    fake.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    try:
        sender.send(journal.encode([("MESSAGE", big), ("PRIORITY", b"3")]), pid=os.getpid())
        fields, pid = fake.receive()
        assert fields == [("MESSAGE", big), ("PRIORITY", b"3")]
        assert pid == os.getpid()
    finally:
        sender.close()


def test_no_journal_fails_the_send_at_once(tmp_path: Path) -> None:
    sender = journal.JournalSocket(str(tmp_path / "missing"))
    try:
        with pytest.raises(FileNotFoundError):
            sender.send(journal.encode([("MESSAGE", b"x")]))
    finally:
        sender.close()


def test_a_full_journal_queue_fails_the_send_instead_of_blocking(fake: FakeJournal) -> None:
    sender = journal.JournalSocket(str(fake.path))
    try:
        with pytest.raises(BlockingIOError):
            for _ in range(100_000):  # the receive queue is bounded (net.unix.max_dgram_qlen)
                sender.send(journal.encode([("MESSAGE", b"x" * 1000)]))
    finally:
        sender.close()


def test_the_socket_is_journalds_unless_a_test_names_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(journal.SOCKET_ENV, raising=False)
    assert journal.socket_path() == "/run/systemd/journal/socket"
    monkeypatch.setenv(journal.SOCKET_ENV, "/tmp/x.sock")
    assert journal.socket_path() == "/tmp/x.sock"


@pytest.mark.parametrize(
    ("cgroup", "unit"),
    [
        ("0::/system.slice/sandboxd.service\n", "sandboxd.service"),
        ("0::/system.slice/sandboxd.service/holder\n", "sandboxd.service"),
        ("0::/user.slice/user-0.slice/session-3.scope\n", "session-3.scope"),
        ("0::/\n", None),
        ("12:pids:/\n0::/init.scope\n", "init.scope"),
        ("12:pids:/system.slice/x.service\n", None),  # v1 lines only: no unified path
        ("0::/sandboxd-test-1/units/web\n", None),
    ],
)
def test_the_daemons_own_unit_is_read_as_journald_reads_it(
    tmp_path: Path, cgroup: str, unit: str | None
) -> None:
    path = tmp_path / "cgroup"
    path.write_text(cgroup)
    assert journal.own_unit(str(path)) == unit
