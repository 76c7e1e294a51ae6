"""Text for people: sizes, durations, aligned tables, colors only on a terminal (pure functions)."""

from __future__ import annotations

import os

from supervisor.cli import names

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Sequence
    from typing import IO

STATE_COLORS = {
    names.RUNNING: "32",  # green
    names.STARTING: "33",  # yellow
    names.STOPPING: "33",
    names.BACKOFF: "33",
    names.FAILED: "31",  # red
    names.INVALID: "31",
    names.EXITED: "2",  # dim
    names.STOPPED: "2",
}


# What a terminal would act on instead of showing: C0 and C1 controls and DEL (cursor moves,
# colours, title changes, a fake "running" over a real "failed"), and the Unicode bidi
# controls that reorder a line (Trojan Source). Services control some of what we print (their
# STATUS= text, their exec paths inside errors), so every such string is shown escaped.
_UNSAFE = {
    *range(0x00, 0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F,
    *range(0x202A, 0x202F), *range(0x2066, 0x206A),
}  # fmt: skip
_ESCAPES = {c: ascii(chr(c))[1:-1] for c in _UNSAFE}


def safe(text: str) -> str:
    """`text` with every control and bidi character shown as a Python escape (\\x1b,
    \\u202e), so what reaches the terminal is exactly what the line says."""
    return text.translate(_ESCAPES)


def clip(text: str, width: int) -> str:
    """`text` cut to `width` characters, the last one `…` when something was cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def use_color(stream: IO[str]) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def paint(text: str, code: str | None, color: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if color and code else text


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float | None) -> str:
    """`42s`, `5m3s`, `2h5m`, `3d4h`: two units at most, like ps and docker."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s" if seconds % 1 else f"{int(seconds)}s"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{s}s"
    return f"{s}s"


def utc_now() -> dt.datetime:
    """The wall clock as an aware datetime; datetime is imported here, when a view needs it
    (a timestamp to compare), not by every `sandboxctl` call (1 to 2 ms)."""
    import datetime  # noqa: PLC0415  (only when a timestamp is compared)

    return datetime.datetime.now(datetime.UTC)


def since(iso: str | None, now: dt.datetime) -> float | None:
    if not iso:
        return None
    try:
        import datetime  # noqa: PLC0415  (already imported: `now` is one)

        return max(0.0, (now - datetime.datetime.fromisoformat(iso)).total_seconds())
    except (ValueError, TypeError):
        return None


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], colors: Sequence[str | None], color: bool
) -> list[str]:
    """Left-aligned columns; `colors[i]` paints row i's second column (the state)."""
    # Every control and bidi character is unprintable (Cc, Cf): one check of all the text
    # instead of a call per cell (7000 at 1000 units), which are escaped only if it fails.
    if not "".join(map("".join, rows)).isprintable():
        rows = [[safe(cell) for cell in row] for row in rows]
    widths = [max(map(len, column)) for column in zip(header, *rows, strict=True)]
    # One format string for every line: a status of 1000 units is 1000 calls, not 7000.
    line = "  ".join(f"{{:<{w}}}" for w in widths).format
    lines = [line(*header).rstrip()]
    for row, code in zip(rows, colors, strict=True):
        cells = row
        if color and code and len(row) > 1:
            # Padded before painting: the escape codes take no room on the terminal.
            cells = [row[0], paint(row[1].ljust(widths[1]), code, color), *row[2:]]
        lines.append(line(*cells).rstrip())
    return lines
