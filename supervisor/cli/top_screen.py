"""`sandboxctl top` on a terminal: the table redrawn in place on the alternate screen, keys
re-sort it, q quits. Imported only then (termios, tty, select and shutil are no part of
`top --once` or `--json`)."""

from __future__ import annotations

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
from supervisor.cli.commands.top import Frames, title
from supervisor.errors import EXIT_OK

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    from typing import Any

# The first picture on a terminal comes after this much sampling (or -d, if shorter), so it
# has rates without making the user wait a whole interval.
FIRST_SAMPLE = 0.5
ALT_SCREEN_ON, ALT_SCREEN_OFF = "\033[?1049h\033[?25l", "\033[?25h\033[?1049l"
HOME, CLEAR_LINE, CLEAR_BELOW = "\033[H", "\033[K", "\033[J"


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
    shown = [title(info, rows, key, delay)[: size.columns], *lines[: max(1, size.lines - 2)]]
    sys.stdout.write(HOME + "".join(line + CLEAR_LINE + "\n" for line in shown) + CLEAR_BELOW)
    sys.stdout.flush()


def interactive(frames: Frames, key: str, delay: float) -> int:
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
