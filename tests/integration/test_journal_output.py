"""Service output to the journal through a real daemon and real sandboxes, against a fake journal
(tests/support/fakejournal.py) the daemon is pointed at with SANDBOXD_JOURNAL_SOCKET: each
line an entry with the unit's fields, PRIORITY by stream, and the service's host PID as the
sender; `both` into the log file too; `sandboxctl logs` of a journal-only unit; a re-adopting
daemon keeps both streams going. journald itself: tests/systemd/test_journal_output.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon_kit import Daemon
from tests.support.fakejournal import FakeJournal
from tests.support.requires import requires_root
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.root, requires_root, pytest.mark.usefixtures("not_a_subreaper")]

# Prints a numbered pair of lines, one per stream, each time it gets SIGUSR1 (and once at start):
# the test decides when output comes, so it never races a line it is waiting for.
CHATTY = """
[service]
exec = ["/bin/sh", "-c", '''
i=0
say() { echo "out $i"; echo "err $i" >&2; i=$((i + 1)); }
trap say USR1
trap "exit 0" TERM
say
while :; do sleep 0.2 & wait $!; done''']
stop_timeout = "2s"
"""


def RUNNING(unit: dict[str, Any]) -> bool:  # noqa: N802 (read as a state in wait_unit)
    return unit["state"] == "running" and unit["pid"] is not None


class Entries:
    """The entries the fake journal received so far, by unit."""

    def __init__(self, journal: FakeJournal) -> None:
        self.journal = journal
        self.seen: list[tuple[dict[str, bytes], int]] = []

    def lines(self, unit: str) -> list[tuple[bytes, bytes, int]]:
        """(MESSAGE, PRIORITY, sender pid) of `unit`'s entries, receiving what has come."""
        self.journal.sock.settimeout(0.05)
        try:
            while True:
                fields, pid = self.journal.receive()
                self.seen.append((dict(fields), pid))
        except TimeoutError:
            pass
        return [(f["MESSAGE"], f["PRIORITY"], pid) for f, pid in self.seen
                if f.get("SANDBOXD_UNIT") == unit.encode()]  # fmt: skip

    def wait(self, unit: str, message: bytes) -> tuple[bytes, bytes, int]:
        found: list[tuple[bytes, bytes, int]] = []

        def arrived() -> bool:
            found[:] = [e for e in self.lines(unit) if e[0] == message]
            return bool(found)

        wait_for(arrived, 60, lambda: f"no {message!r} from {unit}: {self.lines(unit)}")
        return found[0]


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[FakeJournal]:
    j = FakeJournal(Path("/tmp") / f"sbxd-journal-{os.getpid()}-{tmp_path.name}.sock")
    j.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    yield j
    j.close()


def start(daemon: Daemon, journal: FakeJournal, output: str) -> None:
    daemon.config.write_text(f'output = "{output}"\n')
    daemon.start(env={"SANDBOXD_JOURNAL_SOCKET": str(journal.path)})


def sandboxctl(daemon: Daemon, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SANDBOXD_SOCKET": str(daemon.socket)}
    return subprocess.run([sys.executable, "-m", "supervisor.cli.main", *argv], env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_each_line_goes_to_the_journal_as_the_service_with_its_streams_priority(
    daemon: Daemon, journal: FakeJournal
) -> None:
    daemon.write_unit("chatty", CHATTY)
    start(daemon, journal, "journal")
    entries = Entries(journal)
    unit = daemon.wait_unit("chatty", RUNNING)
    assert entries.wait("chatty", b"out 0") == (b"out 0", b"6", unit["pid"])
    assert entries.wait("chatty", b"err 0") == (b"err 0", b"3", unit["pid"])
    fields = next(f for f, _ in entries.seen if f.get("MESSAGE") == b"out 0")
    assert fields["SYSLOG_IDENTIFIER"] == b"chatty"
    assert not (daemon.logs / "chatty.log").exists(), "journal only: no log file"
    assert daemon.unit("chatty")["output"] == "journal"

    logs = sandboxctl(daemon, "logs", "chatty")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == ""
    assert "journalctl SANDBOXD_UNIT=chatty" in logs.stderr


def test_a_units_output_both_overrides_the_daemons_and_fills_the_file_too(
    daemon: Daemon, journal: FakeJournal
) -> None:
    daemon.write_unit("chatty", CHATTY.replace("stop_timeout", 'output = "both"\nstop_timeout'))
    daemon.write_unit("plain", CHATTY)
    start(daemon, journal, "file")
    entries = Entries(journal)
    daemon.wait_unit("plain", RUNNING)
    pid = daemon.wait_unit("chatty", RUNNING)["pid"]
    entries.wait("chatty", b"err 0")
    wait_for(lambda: "err 0" in daemon.output("chatty"), 60)
    assert {"out 0", "err 0"} <= set(daemon.output("chatty").splitlines())
    assert entries.wait("chatty", b"out 0")[2] == pid
    wait_for(lambda: "err 0" in daemon.output("plain"), 60)
    assert entries.lines("plain") == [], "output = file: nothing in the journal"
    assert daemon.unit("plain")["output"] == "file"


def test_a_re_adopting_daemon_keeps_both_streams_going_to_the_journal(
    daemon: Daemon, journal: FakeJournal
) -> None:
    daemon.write_unit("chatty", CHATTY)
    start(daemon, journal, "journal")
    entries = Entries(journal)
    pid = daemon.wait_unit("chatty", RUNNING)["pid"]
    entries.wait("chatty", b"err 0")
    daemon.wait_recorded()
    daemon.kill9()
    daemon.start(env={"SANDBOXD_JOURNAL_SOCKET": str(journal.path)})
    assert daemon.wait_unit("chatty", RUNNING)["pid"] == pid
    os.kill(pid, signal.SIGUSR1)  # PID 1 of the sandbox this test's daemon started
    assert entries.wait("chatty", b"out 1") == (b"out 1", b"6", pid)
    assert entries.wait("chatty", b"err 1") == (b"err 1", b"3", pid)


def test_no_journal_drops_and_counts_the_lines_and_the_service_runs_on(
    daemon: Daemon, tmp_path: Path
) -> None:
    daemon.write_unit("chatty", CHATTY)
    daemon.config.write_text('output = "journal"\n')
    daemon.start(env={"SANDBOXD_JOURNAL_SOCKET": str(tmp_path / "nobody-listens.sock")})
    pid = daemon.wait_unit("chatty", RUNNING)["pid"]
    wait_for(lambda: daemon.unit("chatty")["output_dropped_bytes"] >= len("out 0\nerr 0\n"), 60)
    assert len(daemon.events("unit.journal_dropping")) == 2  # once per stream, not per line
    os.kill(pid, signal.SIGUSR1)
    wait_for(lambda: daemon.unit("chatty")["output_dropped_bytes"] >= 2 * len("out 0\nerr 0\n"), 60)
    assert len(daemon.events("unit.journal_dropping")) == 2
    assert daemon.unit("chatty")["state"] == "running"


def test_a_journal_that_reads_nothing_never_holds_the_service_or_the_file(
    daemon: Daemon, journal: FakeJournal
) -> None:
    # The fake journal is never read: its queue fills and every later send fails with EAGAIN,
    # as with a stalled journald. The service still writes all it has, the file gets all of it.
    daemon.write_unit("flood", """
[service]
exec = ["/bin/sh", "-c", '''
i=0
while [ $i -lt 5000 ]; do echo "line $i"; i=$((i + 1)); done
echo done
trap "exit 0" TERM
while :; do sleep 1 & wait $!; done''']
stop_timeout = "2s"
output = "both"
""")  # fmt: skip
    start(daemon, journal, "file")
    # Many more lines than the socket's queue holds (net.unix.max_dgram_qlen: 10 by the
    # kernel's default, 512 as systemd sets it).
    wait_for(lambda: "done" in daemon.output("flood").splitlines(), 300)
    assert len(daemon.output("flood").splitlines()) == 5001
    wait_for(lambda: daemon.unit("flood")["output_dropped_bytes"] > 0, 300)
    assert len(daemon.events("unit.journal_dropping")) == 1, "one warning for the episode"
    assert daemon.unit("flood")["state"] == "running"
