"""Per-unit runtime state in `<state_dir>/units/<unit>.json`, for re-adoption after a restart.

Each write is atomic: write a temp file, fsync it, rename it over the old one. A crash at any
point leaves either the old or the new file, never a torn one (runc's `utils.WriteJSON` does the
same). The default state_dir is /run, a tmpfs, where the fsync costs nothing; on a disk-backed
state_dir it costs a few ms per save, which is why unchanged records are not rewritten. A file
that does not parse, or that another program wrote, is reported and ignored: a bad state file
must never keep the daemon from starting.

Every file is opened relative to the directory's fd, which is reached with no symlink in any
component, and never through a symlink itself (linux/safefs.py): a planted link in the state
directory can neither redirect a write nor feed the daemon another file as a unit's state.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from supervisor.linux import safefs
from supervisor.log import get_logger

FORMAT = "sandboxd-unit-state/1"
log = get_logger()


@dataclass
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
    oom_base: int = 0  # the cgroup's oom counter at this run's launch
    output_fd: int | None = None  # fd number of the output pipe's read end inside PID 1
    output_inode: int | None = None  # that pipe's inode, to check the fd before reopening it
    intent: str | None = None  # why the run is ending: restart | stop | the daemon's reason

    def to_json(self) -> dict[str, Any]:
        # Shallow, for json.dumps only: asdict() deep-copies the spec, a few ms per save.
        return {"format": FORMAT, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_json(cls, data: Any) -> UnitRecord:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        fields = {k: v for k, v in data.items() if k != "format"}
        record = cls(**fields)
        if not isinstance(record.unit, str) or not isinstance(record.state, str):
            raise ValueError("unit and state must be strings")
        if record.pid is not None and (not isinstance(record.pid, int) or record.pid <= 1):
            raise ValueError(f"bad pid {record.pid!r}")
        return record


class Store:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "units"
        self._written: dict[str, bytes] = {}  # what each unit's file holds, as we wrote it

    def prepare(self) -> None:
        """Create the directory, or make an existing one ours alone again (0700)."""
        with safefs.directory(self.dir, mkdir_mode=0o700) as fd:
            safefs.check_owned(fd, str(self.dir), 0o700)

    def path(self, unit: str) -> Path:
        return self.dir / f"{unit}.json"

    def save(self, record: UnitRecord) -> None:
        data = json.dumps(record.to_json(), sort_keys=True).encode()
        if self._written.get(record.unit) == data:
            return
        with safefs.directory(self.dir) as fd:
            safefs.write_atomic(fd, f"{record.unit}.json", data, 0o600)
        self._written[record.unit] = data

    def remove(self, unit: str) -> None:
        self._written.pop(unit, None)
        with contextlib.suppress(FileNotFoundError), safefs.directory(self.dir) as fd:
            os.unlink(f"{unit}.json", dir_fd=fd)  # unlink never follows the name itself

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
