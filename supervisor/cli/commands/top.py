"""`sandboxctl top [-d SECONDS] [--once] [--json] [--sort COLUMN]`: every unit's CPU, memory,
pids, I/O and memory pressure, refreshed.

One GET /v1/top per frame (every unit's counters at once); rates are the difference of two
frames over the daemon's monotonic time between them. On a terminal the table redraws in
place and keys re-sort it; in a pipe each frame is printed plainly after the one before.
"""

from __future__ import annotations

import sys
import time

from supervisor.cli import jsonwrite, render, simple, top_view, verbs
from supervisor.cli.client import Client, exits
from supervisor.errors import EXIT_OK

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    import argparse
    from typing import Any

HELP = verbs.HELP["top"]
DEFAULT_DELAY = 2.0
MIN_DELAY = 0.1
EPILOG = f"""\
columns: UNIT STATE CPU% (of one CPU, over the interval) MEM MEM% (of memory_max) PIDS
READ/s WRITE/s (block I/O) MEM-PSI (memory pressure, some avg10, %; - on cgroup v1, which has
none) RESTARTS HEALTH. `-` where there is nothing to measure: a unit not running, a run that
began during the interval. On a terminal, keys sort: c cpu, m memory, p pids, i I/O,
r restarts; q quits. --once and --json print after one interval (-d, default {DEFAULT_DELAY:g}s)

EXAMPLE:
  sandboxctl top                   # live; press m to sort by memory
  sandboxctl top --once --sort mem | head -5
  sandboxctl top --json -d 5 | jq -c '.units[] | select(.cpu_percent > 50) | .name'
"""


def _delay(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value >= MIN_DELAY or value == float("inf"):
        import argparse  # noqa: PLC0415  (only to refuse: argparse then reports it)

        why = (
            f"must be at least {MIN_DELAY:g} seconds"
            if value is not None
            else (f"not a number of seconds: {text!r}")
        )
        raise argparse.ArgumentTypeError(why)
    return value


_DELAY = simple.Option("delay", _delay, default=DEFAULT_DELAY)
SIMPLE = simple.Spec(
    flags={"--once": ("once", True), "--json": ("json", True)},
    options={
        "-d": _DELAY,
        "--delay": _DELAY,
        "--sort": simple.Option("sort", default=top_view.DEFAULT_SORT, choices=top_view.SORTS),
    },
)


def register(subparsers: Any) -> None:
    import argparse  # noqa: PLC0415  (argparse is loaded already when a parser is built)

    p = subparsers.add_parser(
        "top",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-d", "--delay", type=_delay, default=DEFAULT_DELAY, metavar="SECONDS",
        help=f"seconds between frames (default {DEFAULT_DELAY:g})",
    )  # fmt: skip
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument(
        "--json", action="store_true", help="one JSON object per frame, one frame per line"
    )
    p.add_argument(
        "--sort", choices=top_view.SORTS, default=top_view.DEFAULT_SORT, metavar="COLUMN",
        # argparse expands % in help: the `mem%` column must be written %%.
        help=f"sort by: {', '.join(top_view.SORTS)} (default {top_view.DEFAULT_SORT})".replace(
            "%", "%%"
        ),
    )  # fmt: skip
    p.set_defaults(run=run)


class Frames:
    """Frames from the daemon, each with the rows over the interval before it."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._previous: dict[str, Any] = client.top()

    def next(self) -> tuple[dict[str, Any], list[top_view.Row]]:
        frame = self._client.top()
        rows = top_view.rows(frame, self._previous)
        interval = float(frame["monotonic"]) - float(self._previous["monotonic"])
        self._previous = frame
        return {"at": frame["at"], "interval": round(interval, 3)}, rows


def _json_line(info: dict[str, Any], rows: list[top_view.Row], key: str) -> str:
    units = [r.to_json() for r in top_view.sort(rows, key)]
    return jsonwrite.dumps({**info, "sort": key, "units": units}) + "\n"


def title(
    info: dict[str, Any], rows: list[top_view.Row], key: str, delay: float, keys: bool = True
) -> str:
    import datetime as dt  # noqa: PLC0415  (not for --once, --json: ~1.5 ms)

    running = sum(r.state == "running" for r in rows)
    try:
        at = dt.datetime.fromisoformat(info["at"]).strftime("%H:%M:%S UTC")
    except (TypeError, ValueError):
        at = "?"
    title = (
        f"sandboxd top  {at}  {len(rows)} units, {running} running  sort: {key}  every {delay:g}s"
    )
    return title + ("  (keys: c m p i r sort, q quit)" if keys else "")


@exits
def run(args: argparse.Namespace) -> int:
    frames = Frames(Client())
    key: str = args.sort
    interactive = not args.once and not args.json and sys.stdout.isatty() and sys.stdin.isatty()
    if interactive:
        # The terminal's modules (termios, tty, select, shutil) only here.
        from supervisor.cli import top_screen  # noqa: PLC0415

        return top_screen.interactive(frames, key, args.delay)
    while True:
        time.sleep(args.delay)
        info, rows = frames.next()
        if args.json:
            sys.stdout.write(_json_line(info, rows, key))
        else:
            lines = top_view.table(top_view.sort(rows, key), key, render.use_color(sys.stdout))
            prefix = "" if args.once else title(info, rows, key, args.delay, keys=False) + "\n"
            sys.stdout.write(prefix + "\n".join(lines) + "\n" + ("" if args.once else "\n"))
        sys.stdout.flush()
        if args.once:
            return EXIT_OK
