"""The state writer thread: a unit's records land in order, a newer one replaces an unwritten
older one (so a stalled disk holds at most one waiting record per unit), and the loop never
waits for the disk (issue 29)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor.engine.statewriter import StateWriter, run_on
from supervisor.engine.store import Store, UnitRecord
from supervisor.linux import safefs
from tests.support.waiting import wait_for


@pytest.fixture
def writer() -> Iterator[StateWriter]:
    w = StateWriter()
    yield w
    assert w.stop(30), "the writer is still busy after the test"


class Gate:
    """A job that holds the writer thread (a stalled write) until `open()`."""

    def __init__(self) -> None:
        self.entered, self._open = threading.Event(), threading.Event()

    def __call__(self) -> None:
        self.entered.set()
        assert self._open.wait(30)

    def open(self) -> None:
        self._open.set()


def test_jobs_of_a_key_run_in_order_and_a_waiting_one_is_replaced(writer: StateWriter) -> None:
    ran: list[str] = []
    gate = Gate()
    assert not writer.submit("web", gate)
    assert gate.entered.wait(30)
    assert not writer.submit("web", lambda: ran.append("web-1"))
    assert writer.submit("web", lambda: ran.append("web-2"))  # web-1 was never written
    assert not writer.submit("db", lambda: ran.append("db-1"))
    assert writer.submit("web", lambda: ran.append("web-3"))  # keeps web's place in line
    assert writer.pending() == 3  # the stalled job, one for web, one for db
    assert not writer.flush(0.01)  # the stall: flush gives up, it does not hang
    gate.open()
    assert writer.flush(30)
    assert ran == ["web-3", "db-1"]
    assert writer.pending() == 0


def test_a_failing_job_does_not_stop_the_thread(writer: StateWriter) -> None:
    ran: list[str] = []

    def bug() -> None:
        raise RuntimeError("a bug")

    with capture_logs() as logs:
        writer.submit("web", bug)
        writer.submit("db", lambda: ran.append("db"))
        assert writer.flush(30)
    assert ran == ["db"]
    assert [e["event"] for e in logs] == ["store.writer_failed"]


def test_stop_ends_the_thread_and_a_later_submit_starts_another(writer: StateWriter) -> None:
    before = threading.active_count()
    ran: list[int] = []
    writer.submit("web", lambda: ran.append(1))
    assert writer.stop(30)
    assert ran == [1] and threading.active_count() == before
    writer.submit("web", lambda: ran.append(2))
    assert writer.flush(30)
    assert ran == [1, 2]


class StalledDisk:
    """safefs.write_swapped whose first call hangs until `resume()`, and which counts writes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = safefs.write_swapped
        self.gate = Gate()
        self.written: list[bytes] = []
        monkeypatch.setattr(safefs, "write_swapped", self)

    def __call__(self, dir_fd: int, name: str, data: bytes, mode: int = 0o600) -> None:
        if not self.written:
            self.gate()
        self.written.append(data)
        self.real(dir_fd, name, data, mode)

    def resume(self) -> None:
        self.gate.open()


def test_a_stalled_state_disk_holds_one_record_per_unit_and_ends_with_the_latest(
    tmp_path: Path, writer: StateWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path, writer)
    store.prepare()
    disk = StalledDisk(monkeypatch)
    store.save(UnitRecord("web", "starting"))  # this write stalls
    assert disk.gate.entered.wait(30)
    # Saves return at once however long the disk stalls, and what waits stays one per unit.
    for n in range(1000):
        for unit in ("web", "db", "cache"):
            store.save(UnitRecord(unit, "running", restarts=n))
    assert writer.pending() == 4  # the stalled write, then web, db and cache once each
    store.remove("cache")
    store.save(UnitRecord("gone", "running"))
    store.remove("gone")
    disk.resume()
    assert store.flush(30)
    assert {u: r.restarts for u, r in store.load_all().items()} == {"web": 999, "db": 999}
    # starting, then only the latest of web and db: the 998 records between were dropped.
    assert len(disk.written) == 3
    assert not store.unsaved


def test_a_record_queued_after_a_removal_is_written(
    tmp_path: Path, writer: StateWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path, writer)
    store.prepare()
    disk = StalledDisk(monkeypatch)
    store.save(UnitRecord("web", "starting"))
    assert disk.gate.entered.wait(30)
    store.remove("web")
    store.save(UnitRecord("web", "running"))  # replaces the removal: latest wins
    disk.resume()
    assert store.flush(30)
    assert store.load_all() == {"web": UnitRecord("web", "running")}


def test_the_retry_writes_the_latest_record_not_the_one_that_failed(
    tmp_path: Path, writer: StateWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path, writer)
    store.prepare()
    real = safefs.write_swapped
    full = threading.Event()
    full.set()

    def write(dir_fd: int, name: str, data: bytes, mode: int = 0o600) -> None:
        if full.is_set():
            raise OSError(28, "No space left on device")
        real(dir_fd, name, data, mode)

    monkeypatch.setattr(safefs, "write_swapped", write)
    with capture_logs() as logs:
        store.save(UnitRecord("web", "starting"))
        wait_for(lambda: store.unsaved == {"web"}, 30)
        store.save(UnitRecord("web", "running"))  # fails as well
        assert store.flush(30)
        full.clear()
        store.retry()
        assert store.flush(30)
    assert store.load_all() == {"web": UnitRecord("web", "running")}
    assert [e["event"] for e in logs] == ["store.save_failed", "store.save_resumed"]
    assert logs[1]["failed_saves"] == 2


def test_run_on_waits_for_the_job_and_raises_its_error() -> None:
    writer = StateWriter()
    ran: list[str] = []

    def fails() -> None:
        raise OSError(28, "No space left on device")

    async def main() -> None:
        await run_on(writer, lambda: ran.append("done"))
        assert ran == ["done"]
        with pytest.raises(OSError, match="No space left"):
            await run_on(writer, fails)

    try:
        asyncio.run(main())
    finally:
        assert writer.stop(5)
