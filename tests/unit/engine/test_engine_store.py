"""State files: round trip, atomic replacement, corrupt and foreign files ignored."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor.engine.store import FORMAT as FMT
from supervisor.engine.store import Store, UnitRecord
from supervisor.linux import safefs
from tests.unit.engine.engine_fakes import FlushedStore


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = FlushedStore(tmp_path)
    s.prepare()
    return s


def test_round_trip(store: Store) -> None:
    record = UnitRecord(
        "web", "running", spec={"name": "web"}, spec_hash="h", pid=1234, pid_start=99,
        started_at=1.5, restarts=2, recent_exits=["exit-code:1"], output_fd=3,
        output_inode=77, error_fd=4, error_inode=78, output="journal",
    )  # fmt: skip
    store.save(record)
    assert store.load_all() == {"web": record}
    record.restarts = 3
    store.save(record)
    assert store.load_all()["web"].restarts == 3
    # The temp is kept for the next save, emptied: nothing of an old record stays in it.
    assert sorted(p.name for p in store.dir.iterdir()) == [".web.json.tmp", "web.json"]
    assert (store.dir / ".web.json.tmp").stat().st_size == 0
    store.remove("web")
    store.remove("web")
    assert store.load_all() == {}
    assert list(store.dir.iterdir()) == []  # the temp went with the record


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b'{"format": "something-else/1", "unit": "bad"}',
        json.dumps({"format": FMT, "unit": "bad"}).encode(),  # no state
        json.dumps({"format": FMT, "unit": "bad", "state": "x", "pid": "12"}).encode(),
        json.dumps({"format": FMT, "unit": "bad", "state": "x", "surprise": 1}).encode(),
        json.dumps({"format": FMT, "unit": "other", "state": "x"}).encode(),
        b"[1, 2]",
        b"\xff\xfe garbage",
        b'{"format": "sandboxd-unit-state/1", "unit": "bad", "st',  # torn
        # Wrong types a later step would trip over (arithmetic, signals, iteration).
        json.dumps({"format": FMT, "unit": "bad", "state": "x", "started_at": "1"}).encode(),
        json.dumps({"format": FMT, "unit": "bad", "state": "x", "pid_start": -1}).encode(),
        json.dumps({"format": FMT, "unit": "bad", "state": "x", "pid": True}).encode(),
        json.dumps({"format": FMT, "unit": "bad", "state": "x", "pid": 1}).encode(),
        json.dumps({"format": FMT, "unit": "bad", "state": "x", "recent_exits": "ab"}).encode(),
        json.dumps({"format": FMT, "unit": "bad", "state": "x", "spec": [1]}).encode(),
        json.dumps({"format": FMT, "unit": "bad", "state": "x", "restarts": None}).encode(),
        json.dumps({"format": FMT, "unit": "bad", "state": "x", "output_fd": "3"}).encode(),
        json.dumps({"format": FMT, "unit": "bad", "state": "x", "error_fd": -4}).encode(),
        json.dumps({"format": FMT, "unit": "bad", "state": "x", "output": "syslog"}).encode(),
        json.dumps({"format": FMT, "unit": ["bad"], "state": "x"}).encode(),
    ],
)
def test_corrupt_or_foreign_is_logged_and_ignored(store: Store, content: bytes) -> None:
    store.save(UnitRecord("good", "running"))
    (store.dir / "bad.json").write_bytes(content)
    with capture_logs() as logs:
        records = store.load_all()
    assert list(records) == ["good"]
    assert [(e["event"], Path(e["path"]).name) for e in logs] == [("store.ignored", "bad.json")]


def test_missing_dir_is_empty(tmp_path: Path) -> None:
    assert Store(tmp_path / "nope").load_all() == {}


def test_an_unchanged_record_is_not_rewritten(store: Store) -> None:
    record = UnitRecord("web", "running", pid=1234, pid_start=99)
    store.save(record)
    path = store.path("web")
    assert store.flush(30)
    inode = path.stat().st_ino
    store.save(UnitRecord("web", "running", pid=1234, pid_start=99))
    assert store.flush(30)
    assert path.stat().st_ino == inode  # not replaced
    record.state = "stopping"
    store.save(record)
    assert store.flush(30)
    assert path.stat().st_ino != inode
    assert store.load_all()["web"].state == "stopping"


def test_a_record_saved_again_after_remove_is_written(store: Store) -> None:
    record = UnitRecord("web", "running")
    store.save(record)
    store.remove("web")
    store.save(record)
    assert store.load_all() == {"web": record}


def test_a_failed_save_keeps_the_old_file_warns_once_and_catches_up(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = UnitRecord("web", "running", pid=1234, pid_start=99)
    store.save(old)
    assert store.flush(30)
    real = safefs.write_swapped

    def full(dir_fd: int, name: str, data: bytes, mode: int = 0o600) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safefs, "write_swapped", full)
    new = UnitRecord("web", "stopping", pid=1234, pid_start=99, intent="stop")
    with capture_logs() as logs:
        store.save(new)
        assert store.flush(30)
        store.save(UnitRecord("db", "running"))
        assert store.flush(30)
        store.retry()
        assert store.flush(30)
    assert [(e["event"], e["unit"]) for e in logs] == [("store.save_failed", "web")]
    assert logs[0]["error"] == "No space left on device"
    assert store.load_all() == {"web": old}
    assert store.unsaved == {"web", "db"}

    monkeypatch.setattr(safefs, "write_swapped", real)
    with capture_logs() as logs:
        store.retry()
        assert store.flush(30)
    # web, db, then web and db again from the retry: four writes failed.
    assert [(e["event"], e["failed_saves"]) for e in logs] == [("store.save_resumed", 4)]
    assert store.load_all() == {"web": new, "db": UnitRecord("db", "running")}
    assert not store.unsaved


def test_a_written_record_is_not_kept_in_memory(store: Store) -> None:
    """At 5000 units the records were ~10 MB of the daemon: once on disk, a digest stays."""
    store.save(UnitRecord("web", "running", pid=1234, pid_start=99))
    assert store.flush(30)
    kept = [v for d in (store._queued, store._written, store._latest) for v in d.values()]
    assert all(v is None or len(v) == 16 for v in kept), kept


def test_a_retry_writes_the_latest_record_not_the_one_that_failed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = safefs.write_swapped
    monkeypatch.setattr(safefs, "write_swapped", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.EIO, os.strerror(errno.EIO))))  # fmt: skip
    with capture_logs():
        store.save(UnitRecord("web", "running", pid=1234, pid_start=99))
        store.save(UnitRecord("web", "stopping", pid=1234, pid_start=99, intent="stop"))
        assert store.flush(30)
    monkeypatch.setattr(safefs, "write_swapped", real)
    with capture_logs():
        store.retry()
        assert store.flush(30)
    assert store.load_all()["web"].state == "stopping" and not store.unsaved
    store.remove("web")
    assert store.flush(30) and store.load_all() == {}


def test_a_torn_write_leaves_its_temp_empty(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.save(UnitRecord("web", "running"))

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    assert store.flush(30)
    monkeypatch.setattr(os, "fsync", no_space)
    store.save(UnitRecord("web", "stopping"))
    assert store.flush(30)
    assert store.unsaved == {"web"}
    monkeypatch.undo()
    # The kept temp holds no torn record (nor the space the next attempt needs).
    assert sorted(p.name for p in store.dir.iterdir()) == [".web.json.tmp", "web.json"]
    assert (store.dir / ".web.json.tmp").stat().st_size == 0
    assert store.load_all()["web"].state == "running"
