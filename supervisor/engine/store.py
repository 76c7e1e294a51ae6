"""Per-unit runtime state in `<state_dir>/units/<unit>.json`, for re-adoption after a restart.

Each write is atomic: write the unit's temp file, fsync it, exchange it with the old one
(renameat2 RENAME_EXCHANGE; a rename over it where that is not possible). A crash at any point
leaves either the old or the new file, never a torn one (runc's `utils.WriteJSON` does the same
with a rename). The temp (`.<unit>.json.tmp`, emptied after each write) is kept for the unit's
next write: a fresh one per save allocated an inode and freed one each time, which ext4
without a journal makes costly in CPU (safefs.write_swapped). The default state_dir is /run,
a tmpfs, where the fsync costs nothing; on a disk-backed state_dir it costs a few ms per save,
which is why unchanged records are not rewritten. A file that does not parse, or that
another program wrote, is reported and ignored: a bad state file must never keep the daemon
from starting.

Records are written on the state writer thread (statewriter.py), never on the loop: a state
dir whose writes stall holds that thread, not supervision. So a record reaches the disk a
little after the change it describes, and a daemon killed in between leaves the previous one.
That is safe because the record is not the last word on what runs, the unit's cgroup is: a
recorded PID 1 is adopted only if it is still that process and still in the unit's cgroup,
and anything else found in the cgroup when the unit starts again is killed first
(run._fresh_cgroup, `unit.leftover_killed`), so the next daemon never runs a unit twice and
never signals a process that is not the unit's.

Every file is opened relative to the directory's fd, which is reached with no symlink in any
component, and never through a symlink itself (linux/safefs.py): a planted link in the state
directory can neither redirect a write nor feed the daemon another file as a unit's state.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from supervisor.contract import OUTPUTS
from supervisor.engine import statewriter
from supervisor.engine.statewriter import StateWriter
from supervisor.linux import safefs
from supervisor.log import get_logger

FORMAT = "sandboxd-unit-state/1"
log = get_logger()


@dataclass(slots=True)  # one per unit, held while it runs: no __dict__ each (issue 23)
class UnitRecord:
    """What a new daemon needs to take over a unit that the old one left running."""

    unit: str
    state: str
    spec: dict[str, Any] | None = None  # UnitSpec.to_json() of the run in effect
    spec_hash: str | None = None
    restart_hash: str | None = None
    pid: int | None = None  # host PID of the sandbox's PID 1
    pid_start: int | None = None  # /proc/<pid>/stat starttime: tells PID reuse apart
    started_at: float | None = None  # wall clock (time.time()) of the run's start
    restarts: int = 0
    last_exit: str | None = None
    recent_exits: list[str] = field(default_factory=list)
    oom_kills: int = 0  # all runs
    # The cgroup's oom counter up to which this run's kills are counted in `oom_kills` (its
    # value at launch, plus the kills accounted since): a next daemon counts only later ones.
    oom_base: int = 0
    output_fd: int | None = None  # fd number of the output pipe's read end inside PID 1
    output_inode: int | None = None  # that pipe's inode, to check the fd before reopening it
    # With output to the journal, stderr's own pipe, kept the same way (journalout.py).
    error_fd: int | None = None
    error_inode: int | None = None
    output: str | None = None  # where the run's output goes: file, journal, both (None: file)
    intent: str | None = None  # why the run is ending: restart | stop | the daemon's reason
    # [[listen]] sockets as [fd in PID 1, socket inode]: what the next daemon takes back.
    listen: list[list[int]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        # Shallow, for json.dumps only: asdict() deep-copies the spec, a few ms per save.
        return {"format": FORMAT, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_json(cls, data: Any) -> UnitRecord:
        """The record in `data`; ValueError naming the first key that is missing, unknown or
        of the wrong type. Every value is checked here, so that nothing downstream (adoption
        does arithmetic on `started_at`, signals `pid`) meets a string where it expects a
        number: a hand-edited or corrupted record is refused whole, never half used."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        fields = {k: v for k, v in data.items() if k != "format"}
        for key in ("unit", "state"):
            if key not in fields:
                raise ValueError(f"{key}: missing")
        for key, value in fields.items():
            check = _CHECKS.get(key)
            if check is None:
                raise ValueError(f"{key}: unknown key")
            if not check(value):
                raise ValueError(f"{key}: {_EXPECTED[key]} expected, not {value!r:.60}")
        return cls(**fields)


def _digest(data: bytes) -> bytes:
    """What tells two records apart: 16 bytes instead of the record's ~2 KB kept per unit."""
    return hashlib.blake2b(data, digest_size=16).digest()


def _count(value: Any) -> bool:
    # bool is an int to Python, never a count or a pid in a record we wrote.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _optional(check: Any) -> Any:
    return lambda value: value is None or check(value)


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


# How each key of a record is checked, and how the error says what was expected.
_CHECKS: dict[str, Any] = {
    "unit": _text, "state": _text,
    "spec": _optional(lambda v: isinstance(v, dict)),
    "spec_hash": _optional(_text), "restart_hash": _optional(_text),
    "pid": _optional(lambda v: _count(v) and v > 1),
    "pid_start": _optional(_count), "started_at": _optional(_time),
    "restarts": _count, "last_exit": _optional(_text),
    "recent_exits": lambda v: isinstance(v, list) and all(isinstance(e, str) for e in v),
    "oom_kills": _count, "oom_base": _count,
    "output_fd": _optional(_count), "output_inode": _optional(_count),
    "error_fd": _optional(_count), "error_inode": _optional(_count),
    "output": _optional(lambda v: v in OUTPUTS),
    "intent": _optional(_text),
    "listen": lambda v: isinstance(v, list)
    and all(isinstance(p, list) and len(p) == 2 and all(_count(x) for x in p) for p in v),
}  # fmt: skip
_EXPECTED = {
    "unit": "a string", "state": "a string", "spec": "an object or null",
    "spec_hash": "a string or null", "restart_hash": "a string or null",
    "pid": "a pid above 1 or null", "pid_start": "a count or null",
    "started_at": "a time or null", "restarts": "a count", "last_exit": "a string or null",
    "recent_exits": "a list of strings", "oom_kills": "a count", "oom_base": "a count",
    "output_fd": "an fd number or null", "output_inode": "an inode number or null",
    "error_fd": "an fd number or null", "error_inode": "an inode number or null",
    "output": "file, journal, both or null",
    "intent": "a string or null", "listen": "a list of [fd, inode] pairs",
}  # fmt: skip


class Store:
    """The records, handed to the state writer thread (statewriter.py), and what failed saves
    left to write.

    `save` and `remove` never touch the disk: they queue the unit's latest record (or its
    removal) and return, so a stalled state dir holds only the writer thread, never the loop.
    A unit's records land in the order they were saved; one that a newer record replaced before
    it was written is never written (latest wins), so at most one record per unit waits,
    however long the disk stalls.

    A save is a side effect of a state change (a start, a stop, an exit), never a reason to
    refuse or undo one: when the state directory cannot take a record (ENOSPC on a full
    disk, EIO, a read-only remount), the old file stays whole, the change goes ahead in
    memory, and the unit waits in `unsaved` for `retry()` (the daemon calls it every few
    seconds) or the unit's next save. One warning (`store.save_failed`) opens the episode and
    one `store.save_resumed` closes it once every waiting record is on disk, however many
    saves failed between them.
    """

    def __init__(self, state_dir: Path, writer: StateWriter | None = None) -> None:
        self.dir = state_dir / "units"
        self.writer = writer if writer is not None else statewriter.WRITER
        # The loop's side: a digest of the latest record of each unit handed to the writer.
        # Digests, not the records: at 5000 units the records alone were ~10 MB of the daemon.
        self._queued: dict[str, bytes] = {}
        # The writer's side, also read by the loop: under the lock.
        self._lock = threading.Lock()
        self._written: dict[str, bytes] = {}  # a digest of what each unit's file holds
        # Each unit's latest record (None: its removal) until it is on disk: what `retry`
        # queues again after a failed write.
        self._latest: dict[str, bytes | None] = {}
        self._unsaved: set[str] = set()  # units whose latest write failed
        self._failed = 0  # writes that failed in this episode

    def prepare(self) -> None:
        """Create the directory, or make an existing one ours alone again (0700)."""
        with safefs.directory(self.dir, mkdir_mode=0o700) as fd:
            safefs.check_owned(fd, str(self.dir), 0o700)

    def path(self, unit: str) -> Path:
        return self.dir / f"{unit}.json"

    @property
    def unsaved(self) -> set[str]:
        """The units whose record on disk is older than their latest save (it failed)."""
        with self._lock:
            return set(self._unsaved)

    def save(self, record: UnitRecord) -> None:
        """Queue `record` to be written (atomically) after the unit's earlier records."""
        data = json.dumps(record.to_json(), sort_keys=True).encode()
        digest = _digest(data)
        if self._queued.get(record.unit) != digest:  # unchanged records are not rewritten
            self._queued[record.unit] = digest
            self._submit(record.unit, data)

    def remove(self, unit: str) -> None:
        """Queue the removal of the unit's file after its earlier records."""
        self._queued.pop(unit, None)
        self._submit(unit, None)

    def retry(self) -> None:
        """Queue again the latest record (or removal) of each unit whose write failed."""
        with self._lock:
            again = {unit: self._latest.get(unit) for unit in self._unsaved}
        for unit in sorted(again):
            self._submit(unit, again[unit])

    def flush(self, timeout: float) -> bool:
        """Wait (blocking) up to `timeout` s for what was queued; False if it is still waiting.
        For the daemon's exit, after the loop has ended, and for tests."""
        return self.writer.flush(timeout)

    def _submit(self, unit: str, data: bytes | None) -> None:
        with self._lock:
            self._latest[unit] = data
        self.writer.submit((self.dir, unit), lambda: self._write(unit, data))

    def _write(self, unit: str, data: bytes | None) -> None:
        # On the writer thread.
        try:
            if data is None:
                with safefs.directory(self.dir) as fd:
                    for name in (f"{unit}.json", f".{unit}.json.tmp"):  # the record, its temp
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(name, dir_fd=fd)  # unlink never follows the name itself
            elif self._written.get(unit) != _digest(data):
                with safefs.directory(self.dir) as fd:
                    safefs.write_swapped(fd, f"{unit}.json", data, 0o600)
        except OSError as exc:
            with self._lock:
                self._unsaved.add(unit)
                self._failed += 1
                first = self._failed == 1
            if first:
                log.warning("store.save_failed", unit=unit, path=str(self.path(unit)),
                            error=exc.strerror or str(exc))  # fmt: skip
            return
        with self._lock:
            if data is None:
                self._written.pop(unit, None)
            else:
                self._written[unit] = _digest(data)
            if unit in self._latest and self._latest[unit] is data:  # no newer one queued
                del self._latest[unit]
            self._unsaved.discard(unit)
            failed = self._failed if not self._unsaved else 0
            if failed:
                self._failed = 0
        if failed:
            log.info("store.save_resumed", failed_saves=failed)

    def load_all(self) -> dict[str, UnitRecord]:
        """Every readable record; the others are logged (`store.ignored`) and skipped."""
        records: dict[str, UnitRecord] = {}
        try:
            fd = safefs.open_dir(self.dir)
        except FileNotFoundError:
            return records
        except OSError as exc:
            log.warning("store.unreadable", path=str(self.dir), error=exc.strerror or str(exc))
            return records
        try:
            for name in sorted(n for n in os.listdir(fd) if n.endswith(".json")):
                unit = name.removesuffix(".json")
                try:
                    record = UnitRecord.from_json(json.loads(safefs.read_owned(fd, name)))
                    if record.unit != unit:
                        raise ValueError(f"names unit {record.unit!r}")
                except (OSError, ValueError, TypeError) as exc:
                    error = exc.strerror if isinstance(exc, OSError) else str(exc)
                    log.warning("store.ignored", path=str(self.dir / name), error=error)
                    continue
                records[record.unit] = record
        finally:
            os.close(fd)
        return records
