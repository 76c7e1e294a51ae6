"""`sandboxctl top`'s numbers and text: rates from two frames of GET /v1/top, sorting, the table.

Pure functions, so the arithmetic and the layout are tested without a daemon or a terminal;
commands/top.py only fetches frames and waits, top_screen.py handles keys.
"""

from __future__ import annotations

from supervisor.cli import render

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

# column name -> the header shown. Every column sorts (`--sort NAME`); the keys c, m, p, i, r
# pick the usual ones on a terminal.
COLUMNS = {
    "unit": "UNIT",
    "state": "STATE",
    "cpu": "CPU%",
    "mem": "MEM",
    "mem%": "MEM%",
    "pids": "PIDS",
    "read": "READ/s",
    "write": "WRITE/s",
    "psi": "MEM-PSI",
    "restarts": "RESTARTS",
    "health": "HEALTH",
}
KEYS = {"c": "cpu", "m": "mem", "p": "pids", "i": "io", "r": "restarts"}
SORTS = (*COLUMNS, "io")  # io: read + write
DEFAULT_SORT = "cpu"


class Row:
    """One unit over one interval. None: not measured (not running, the counter restarted
    with a new run, no PSI on cgroup v1), shown as `-`.

    A plain class, not a dataclass: the dataclasses module imports inspect (and with it ast,
    dis, tokenize and re), ~10 ms of every `sandboxctl top`."""

    __slots__ = (
        "cpu_percent",
        "health",
        "memory_bytes",
        "memory_max",
        "memory_percent",
        "memory_pressure",
        "name",
        "pids",
        "read_bps",
        "restarts",
        "state",
        "write_bps",
    )  # fmt: skip

    def __init__(
        self,
        *,
        name: str,
        state: str,
        cpu_percent: float | None,
        memory_bytes: int | None,
        memory_max: int | None,
        memory_percent: float | None,
        pids: int | None,
        read_bps: float | None,
        write_bps: float | None,
        memory_pressure: float | None,  # memory "some" avg10, % of wall time
        restarts: int,
        health: str | None,
    ) -> None:
        self.name, self.state, self.restarts, self.health = name, state, restarts, health
        self.cpu_percent, self.pids = cpu_percent, pids
        self.memory_bytes, self.memory_max = memory_bytes, memory_max
        self.memory_percent, self.memory_pressure = memory_percent, memory_pressure
        self.read_bps, self.write_bps = read_bps, write_bps

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "cpu_percent": self.cpu_percent,
            "memory_bytes": self.memory_bytes,
            "memory_max": self.memory_max,
            "memory_percent": self.memory_percent,
            "pids": self.pids,
            "io_read_bytes_per_second": self.read_bps,
            "io_write_bytes_per_second": self.write_bps,
            "memory_pressure_some_avg10": self.memory_pressure,
            "restarts": self.restarts,
            "health": self.health,
        }


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _rate(
    now: dict[str, Any], before: dict[str, Any] | None, key: str, seconds: float
) -> float | None:
    """Per second between two frames; None without an earlier value of the same run (a new
    pid means the counters began again)."""
    if before is None or seconds <= 0 or before.get("pid") != now.get("pid"):
        return None
    a, b = _int(before.get(key)), _int(now.get(key))
    if a is None or b is None or b < a:
        return None
    return (b - a) / seconds


def rows(frame: dict[str, Any], previous: dict[str, Any] | None) -> list[Row]:
    """The rows of `frame`, with rates over the time since `previous` (None: no rates yet)."""
    seconds = 0.0
    before: dict[str, dict[str, Any]] = {}
    if previous is not None:
        seconds = float(frame["monotonic"]) - float(previous["monotonic"])
        before = {u["name"]: u for u in previous["units"]}
    out = []
    for unit in frame["units"]:
        old = before.get(unit["name"])
        cpu = _rate(unit, old, "cpu_usage_usec", seconds)
        memory, cap = _int(unit.get("memory_bytes")), _int(unit.get("memory_max"))
        psi = unit.get("memory_pressure") or {}
        some = psi.get("some") or {}
        avg10 = some.get("avg10")
        out.append(
            Row(
                name=unit["name"],
                state=unit["state"],
                cpu_percent=None if cpu is None else cpu / 1e4,  # usec per s -> % of one CPU
                memory_bytes=memory,
                memory_max=cap,
                memory_percent=100 * memory / cap if memory is not None and cap else None,
                pids=_int(unit.get("pids")),
                read_bps=_rate(unit, old, "io_read_bytes", seconds),
                write_bps=_rate(unit, old, "io_write_bytes", seconds),
                memory_pressure=float(avg10) if isinstance(avg10, int | float) else None,
                restarts=int(unit.get("restarts") or 0),
                health=unit.get("health"),
            )
        )
    return out


_SORT_VALUES: dict[str, Callable[[Row], Any]] = {
    "unit": lambda r: r.name,
    "state": lambda r: r.state,
    "cpu": lambda r: r.cpu_percent,
    "mem": lambda r: r.memory_bytes,
    "mem%": lambda r: r.memory_percent,
    "pids": lambda r: r.pids,
    "read": lambda r: r.read_bps,
    "write": lambda r: r.write_bps,
    "io": lambda r: None if r.read_bps is None else r.read_bps + (r.write_bps or 0),
    "psi": lambda r: r.memory_pressure,
    "restarts": lambda r: r.restarts,
    "health": lambda r: r.health,
}


def sort(units: Sequence[Row], key: str) -> list[Row]:
    """Largest first for numbers (what top is for), A to Z for names and words; units
    without a value last, ties by name."""
    value = _SORT_VALUES[key]
    by_name = sorted(units, key=lambda r: r.name)
    present = [r for r in by_name if value(r) is not None]
    absent = [r for r in by_name if value(r) is None]
    words = key in ("unit", "state", "health")
    return sorted(present, key=value, reverse=not words) + absent


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rate_text(value: float | None) -> str:
    return "-" if value is None else render.size(int(value))


def cells(row: Row) -> list[str]:
    return [
        row.name,
        row.state,
        _number(row.cpu_percent),
        render.size(row.memory_bytes),
        _number(row.memory_percent),
        "-" if row.pids is None else str(row.pids),
        _rate_text(row.read_bps),
        _rate_text(row.write_bps),
        _number(row.memory_pressure, 2),
        str(row.restarts),
        row.health or "-",
    ]


def table(units: Sequence[Row], key: str, color: bool) -> list[str]:
    """The header and one line per unit; the sorted column's header is marked `*`."""
    marked = ("read", "write") if key == "io" else (key,)
    header = tuple(h + ("*" if name in marked else "") for name, h in COLUMNS.items())
    colors = [render.STATE_COLORS.get(r.state) for r in units]
    return render.table(header, [cells(r) for r in units], colors, color)
