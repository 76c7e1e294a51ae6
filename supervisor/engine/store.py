"""Per-unit runtime state in `<state_dir>/units/<unit>.json`, for re-adoption after a restart.

Each write is atomic: write a temp file, fsync it, rename it over the old one. A crash at any
point leaves either the old or the new file, never a torn one (runc's `utils.WriteJSON` does the
same). The default state_dir is /run, a tmpfs, where the fsync costs nothing; on a disk-backed
state_dir it costs a few ms per save, which is why unchanged records are not rewritten. A file
that does not parse, or that another program wrote, is reported and ignored: a bad state file
must never keep the daemon from starting.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

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
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, unit: str) -> Path:
        return self.dir / f"{unit}.json"

    def save(self, record: UnitRecord) -> None:
        data = json.dumps(record.to_json(), sort_keys=True).encode()
        if self._written.get(record.unit) == data:
            return
        target = self.path(record.unit)
        tmp = target.with_name(f".{target.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, target)
        self._written[record.unit] = data

    def remove(self, unit: str) -> None:
        self._written.pop(unit, None)
        self.path(unit).unlink(missing_ok=True)

    def load_all(self) -> dict[str, UnitRecord]:
        """Every readable record; the others are logged (`store.ignored`) and skipped."""
        records: dict[str, UnitRecord] = {}
        try:
            paths = sorted(self.dir.glob("*.json"))
        except OSError:
            return records
        for path in paths:
            try:
                record = UnitRecord.from_json(json.loads(path.read_bytes()))
                if record.unit != path.stem:
                    raise ValueError(f"names unit {record.unit!r}")
            except (OSError, ValueError, TypeError) as exc:
                log.warning("store.ignored", path=str(path), error=str(exc))
                continue
            records[record.unit] = record
        return records
