"""`sandboxctl top [-d SECONDS] [--once] [--json] [--sort COLUMN]`: every unit's CPU, memory,
pids, I/O and memory pressure, refreshed.

One GET /v1/top per frame (every unit's counters at once); rates are the difference of two
frames over the daemon's monotonic time between them. On a terminal the table redraws in
place and keys re-sort it; in a pipe each frame is printed plainly after the one before.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import select
import shutil
import sys
import termios
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager

from supervisor.cli import render, top_view
from supervisor.cli.client import Client, exits
from supervisor.errors import EXIT_OK

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    from typing import Any

HELP = "show every unit's cpu, memory, pids, I/O and memory pressure, refreshed"
DEFAULT_DELAY = 2.0
MIN_DELAY = 0.1
# The first picture on a terminal comes after this much sampling (or -d, if shorter), so it
# has rates without making the user wait a whole interval.
FIRST_SAMPLE = 0.5
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
ALT_SCREEN_ON, ALT_SCREEN_OFF = "\033[?1049h\033[?25l", "\033[?25h\033[?1049l"
HOME, CLEAR_LINE, CLEAR_BELOW = "\033[H", "\033[K", "\033[J"


def _delay(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= MIN_DELAY or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be at least {MIN_DELAY:g} seconds")
    return value


def register(subparsers: Any) -> None:
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
    return json.dumps({**info, "sort": key, "units": units}) + "\n"


def _title(
    info: dict[str, Any], rows: list[top_view.Row], key: str, delay: float, keys: bool = True
) -> str:
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
        return _interactive(frames, key, args.delay)
    while True:
        time.sleep(args.delay)
        info, rows = frames.next()
        if args.json:
            sys.stdout.write(_json_line(info, rows, key))
        else:
            lines = top_view.table(top_view.sort(rows, key), key, render.use_color(sys.stdout))
            prefix = "" if args.once else _title(info, rows, key, args.delay, keys=False) + "\n"
            sys.stdout.write(prefix + "\n".join(lines) + "\n" + ("" if args.once else "\n"))
        sys.stdout.flush()
        if args.once:
            return EXIT_OK


@contextmanager
def _screen(fd: int) -> Iterator[None]:
    """cbreak (keys arrive one by one, unechoed; ^C still interrupts) on the alternate screen,
    everything as it was afterwards, however the loop ends."""
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    sys.stdout.write(ALT_SCREEN_ON)
    try:
        yield
    finally:
        sys.stdout.write(ALT_SCREEN_OFF)
        sys.stdout.flush()
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _draw(info: dict[str, Any], rows: list[top_view.Row], key: str, delay: float) -> None:
    size = shutil.get_terminal_size()
    lines = top_view.table(top_view.sort(rows, key), key, render.use_color(sys.stdout))
    # The title and the header always show; units beyond the screen's height do not.
    shown = [_title(info, rows, key, delay)[: size.columns], *lines[: max(1, size.lines - 2)]]
    sys.stdout.write(HOME + "".join(line + CLEAR_LINE + "\n" for line in shown) + CLEAR_BELOW)
    sys.stdout.flush()


def _interactive(frames: Frames, key: str, delay: float) -> int:
    fd = sys.stdin.fileno()
    last: tuple[dict[str, Any], list[top_view.Row]] | None = None
    with _screen(fd):
        wait = min(delay, FIRST_SAMPLE)
        while True:
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([fd], [], [], left)[0]:
                    continue
                pressed = os.read(fd, 64).decode(errors="replace")
                if not pressed:  # the terminal went away
                    return EXIT_OK
                for char in pressed:
                    if char == "q":
                        return EXIT_OK
                    if char in top_view.KEYS:
                        key = top_view.KEYS[char]
                        if last is not None:  # re-sorted at once, not at the next frame
                            _draw(*last, key, delay)
            last = frames.next()
            _draw(*last, key, delay)
            wait = delay
