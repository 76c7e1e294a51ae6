"""`sandboxctl top`'s arithmetic and layout, from frames as GET /v1/top returns them."""

from __future__ import annotations

from typing import Any

import pytest

from supervisor.cli import top_view


def unit(name: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": name, "state": "running", "pid": 10, "restarts": 0, "health": None,
        "memory_max": None, "memory_bytes": 1 << 20, "cpu_usage_usec": 0, "pids": 1,
        "io_read_bytes": 0, "io_write_bytes": 0, "memory_pressure": None,
    }  # fmt: skip
    row.update(kw)
    return row


def frame(at: float, *units: dict[str, Any]) -> dict[str, Any]:
    return {"monotonic": at, "at": "2026-01-01T00:00:00+00:00", "units": list(units)}


def test_rates_over_the_daemons_interval() -> None:
    before = frame(100.0, unit("web", cpu_usage_usec=1_000_000, io_read_bytes=0))
    now = frame(102.0, unit("web", cpu_usage_usec=2_000_000, io_read_bytes=8192,
                            io_write_bytes=100, memory_max=4 << 20))  # fmt: skip
    (row,) = top_view.rows(now, before)
    assert row.cpu_percent == pytest.approx(50.0)  # 1 s of CPU in 2 s
    assert row.read_bps == 4096 and row.write_bps == 50
    assert row.memory_percent == pytest.approx(25.0)


def test_no_rate_without_an_earlier_value_of_the_same_run() -> None:
    before = frame(1.0, unit("web", cpu_usage_usec=5_000_000), unit("gone"))
    now = frame(2.0, unit("web", pid=11, cpu_usage_usec=10), unit("new", cpu_usage_usec=10))
    rows = {r.name: r for r in top_view.rows(now, before)}
    assert rows["web"].cpu_percent is None  # restarted: a new counter, not a negative rate
    assert rows["new"].cpu_percent is None
    assert all(r.cpu_percent is None for r in top_view.rows(now, None))


def test_not_running_and_no_psi_show_as_dashes() -> None:
    stopped = unit("db", state="stopped", pid=None, memory_bytes=None, cpu_usage_usec=None,
                   pids=None, io_read_bytes=None, io_write_bytes=None)  # fmt: skip
    (row,) = top_view.rows(frame(2.0, stopped), frame(1.0, stopped))
    assert top_view.cells(row) == ["db", "stopped", "-", "-", "-", "-", "-", "-", "-", "0", "-"]


def test_memory_pressure_is_some_avg10() -> None:
    psi = {"some": {"avg10": 7.25, "avg60": 1, "avg300": 0, "total": 9}}
    (row,) = top_view.rows(frame(1.0, unit("web", memory_pressure=psi)), None)
    assert row.memory_pressure == 7.25
    assert top_view.cells(row)[8] == "7.25"


def test_sort_largest_first_names_a_to_z_absent_last() -> None:
    before = frame(0.0, unit("a"), unit("b"), unit("c"), unit("d", pid=None))
    stopped = unit("d", pid=None, cpu_usage_usec=None, memory_bytes=None)
    now = frame(1.0, unit("a", cpu_usage_usec=10_000, restarts=3),
                unit("b", cpu_usage_usec=500_000, memory_bytes=5),
                unit("c", cpu_usage_usec=500_000), stopped)  # fmt: skip
    rows = top_view.rows(now, before)
    assert [r.name for r in top_view.sort(rows, "cpu")] == ["b", "c", "a", "d"]
    assert next(r.name for r in top_view.sort(rows, "restarts")) == "a"
    # mem: a, b, c equal at 1M except b (5 bytes), d not running
    assert [r.name for r in top_view.sort(rows, "mem")] == ["a", "c", "b", "d"]
    assert [r.name for r in top_view.sort(rows, "unit")] == ["a", "b", "c", "d"]
    for key in top_view.SORTS:
        assert sorted(r.name for r in top_view.sort(rows, key)) == ["a", "b", "c", "d"]


def test_table_marks_the_sort_column_and_paints_states_on_a_terminal() -> None:
    rows = top_view.rows(frame(1.0, unit("web"), unit("db", state="failed", pid=None)), None)
    plain = top_view.table(top_view.sort(rows, "io"), "io", color=False)
    assert plain[0].split()[6:8] == ["READ/s*", "WRITE/s*"]
    assert "\033[" not in "".join(plain)
    painted = top_view.table(rows, "mem", color=True)
    assert "MEM*" in painted[0] and "\033[31mfailed" in "".join(painted)


def test_json_rows_have_stable_keys() -> None:
    (row,) = top_view.rows(frame(1.0, unit("web")), None)
    assert list(row.to_json()) == [
        "name", "state", "cpu_percent", "memory_bytes", "memory_max", "memory_percent", "pids",
        "io_read_bytes_per_second", "io_write_bytes_per_second", "memory_pressure_some_avg10",
        "restarts", "health",
    ]  # fmt: skip
