"""Service output to the journal (`output = "journal"` or `"both"`), one entry per line.

A run whose output goes to the journal gets two pipes, stdout and stderr, so that each line's
PRIORITY says which stream it came from (6 info for stdout, 3 err for stderr, as journald
gives a service's streams). Each pipe has its own Capture (output.py) whose sink is a
JournalStream: on the writer thread it copies what the pipe holds (tee(2), not consumed),
sends each complete line as an entry with the unit's fields and the service's PID as the
sender (linux/journal.py), with `both` also moves the same bytes into the unit's log file
(RotatingLog.take), and only then consumes them from the pipe: the same guarantee as for the
log file, a byte is still in the pipe or already sent.

Entries carry `MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER=<unit>` and `SANDBOXD_UNIT=<unit>`;
`_PID` is the service's host PID (its PID 1, which holds the pipe: the writer of a line
cannot be told apart from its sandbox's other processes). A line longer than LINE_MAX goes as
several entries, as journald splits a stream's long lines; a last line without its newline is
sent when the pipe closes. Sends never block (MSG_DONTWAIT): an entry journald does not take
(no journald, its queue full) is dropped and counted with the unit's dropped output, one
`unit.journal_dropping` warning per episode and `unit.journal_resumed` when entries go again.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from supervisor.contract import Output
from supervisor.engine.output import RotatingLog
from supervisor.linux import journal, pipes
from supervisor.linux.journal import JournalSocket
from supervisor.linux.pipes import OutputPipe

log = structlog.get_logger("sandboxd.output")

# journald's own LineMax= default for stdout streams: a longer line is split into entries of
# this size, so a service that never writes a newline costs the daemon this much, per stream.
LINE_MAX = 48 * 1024
_CHUNK = 1 << 16


def to_journal(output: Output) -> bool:
    return output in ("journal", "both")


def to_file(output: Output) -> bool:
    return output in ("file", "both")


class JournalStream:
    """One stream (stdout or stderr) of a unit's runs, to the journal and, with `both`, into
    the unit's RotatingLog. The Capture's sink: every method but the attributes runs on the
    writer thread."""

    def __init__(
        self,
        sender: JournalSocket,
        file: RotatingLog,
        priority: int,
        *,
        both: bool,
    ) -> None:
        self._sender, self.file, self._both = sender, file, both
        self.unit = file.path.stem
        self.pid: int | None = None  # the service's host PID: set by the run once known
        self._fields = [
            ("PRIORITY", str(priority).encode()),
            ("SYSLOG_IDENTIFIER", self.unit.encode()),
            ("SANDBOXD_UNIT", self.unit.encode()),
        ]
        if sender.daemon_unit is not None:
            # journald derives _SYSTEMD_UNIT from the service's cgroup, which the packaged
            # units put under sandboxd-sandboxes.service. `journalctl -u sandboxd` also shows
            # what a root process logs about that unit (_UID=0 with OBJECT_SYSTEMD_UNIT), and
            # a service's line is its supervisor's output: so `-u sandboxd` finds them.
            self._fields.append(("OBJECT_SYSTEMD_UNIT", sender.daemon_unit.encode()))
        self._partial = bytearray()
        self._dropping: int | None = None  # lines dropped in this episode, while dropping
        self.sent = 0  # entries sent, over the daemon's life

    # What Capture reads and counts on its sink: the unit's log (names, counters).

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def written(self) -> int:
        return self.file.written

    @property
    def dropped_stalled(self) -> int:
        return self.file.dropped_stalled

    @dropped_stalled.setter
    def dropped_stalled(self, value: int) -> None:
        self.file.dropped_stalled = value

    def take(
        self, pipe: OutputPipe | int, limit: int = _CHUNK, spare: tuple[int, int] | None = None
    ) -> int:
        """As RotatingLog.take: up to `limit` bytes moved from `pipe` (0 at end of file,
        BlockingIOError when it is empty), sent to the journal (and into the file)."""
        if spare is None:
            with pipes.staging_pipe() as staging:
                return self.take(pipe, limit, staging)
        src = pipe if isinstance(pipe, OutputPipe) else OutputPipe(pipe)
        teed = src.tee(spare[1], limit)
        data = _read_exactly(spare[0], teed)
        if self._both:
            # The file takes the same bytes again from the pipe (nothing consumed them yet),
            # and consumes what it took: perhaps less, at a rotation boundary.
            moved = self.file.take(src, teed, spare) if teed else 0
            data = data[:moved]
        else:
            src.consume()
        if data:
            self._lines(data)
        return len(data) if self._both else teed

    def note_dropped(self, count: int, why: str) -> None:
        """Output dropped while a write stalled: said in the file (with `both`) and in the
        journal, not at the unit's next output."""
        if self._both:
            self.file.note_dropped(count, why)
        self._send(f"[sandboxd: {count} bytes of output dropped: {why}]".encode())

    def close(self) -> None:
        """The pipe is closed: a last line without its newline is sent now."""
        if self._partial:
            line, self._partial = bytes(self._partial), bytearray()
            self._send(line)
        if self._both:
            self.file.close()

    def _lines(self, data: bytes) -> None:
        self._partial += data
        start = 0
        while (end := self._partial.find(b"\n", start)) >= 0:
            self._send_long(bytes(self._partial[start:end]))
            start = end + 1
        del self._partial[:start]
        while len(self._partial) >= LINE_MAX:
            self._send(bytes(self._partial[:LINE_MAX]))
            del self._partial[:LINE_MAX]

    def _send_long(self, line: bytes) -> None:
        for at in range(0, max(len(line), 1), LINE_MAX):
            self._send(line[at : at + LINE_MAX])

    def _send(self, line: bytes) -> None:
        entry = journal.encode([("MESSAGE", line), *self._fields])
        try:
            self._sender.send(entry, self.pid)
        except OSError as exc:
            self.file.dropped_journal += len(line) + 1
            if self._dropping is None:
                self._dropping = 0
                log.warning("unit.journal_dropping", unit=self.unit, socket=self._sender.path,
                            error=exc.strerror or str(exc),
                            detail="the journal takes no more entries: the service's lines "
                            "are dropped (and counted) until it does again, so the service "
                            "never blocks")  # fmt: skip
            self._dropping += 1
            return
        self.sent += 1
        if self._dropping is not None:
            log.info("unit.journal_resumed", unit=self.unit, dropped_lines=self._dropping)
            self._dropping = None


def _read_exactly(fd: int, count: int) -> bytes:
    """The `count` bytes the caller knows are in pipe `fd`."""
    parts, left = [], count
    while left > 0:
        chunk = os.read(fd, left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)
