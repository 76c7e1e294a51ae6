"""`sandboxctl events [UNIT] [--since SEQ | --replay N] [--no-follow] [--json]`: unit events,
recent ones first (the last 10 unless told otherwise, as `journalctl -f`), in aligned columns."""

from __future__ import annotations

import datetime as dt
import sys

from supervisor.cli import jsonwrite, render, simple, verbs
from supervisor.cli.arguments import count
from supervisor.cli.client import Client, exits
from supervisor.errors import EXIT_OK

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    import argparse
    from typing import Any

HELP = verbs.HELP["events"]
DEFAULT_REPLAY = 10
EPILOG = f"""\
columns: SEQ TIME UNIT EVENT STATE DETAIL; TIME is UTC, STATE the unit's state after the event.
First the last {DEFAULT_REPLAY} kept events (--replay N for more, --replay 0 for none), or those
after --since SEQ: SEQ numbers the events of one daemon run, so --since resumes after the last
one seen. The daemon keeps the last 1000 events; a later daemon numbers from 1 again, and
--since a number it has not reached yet prints all it keeps. Without --no-follow, keeps
printing new events until interrupted

EXAMPLE:
  sandboxctl events web --replay 20
  sandboxctl events --since 1234 --json --no-follow
"""
HEADER = ("SEQ", "TIME", "UNIT", "EVENT", "STATE", "DETAIL")
# Starting widths; a longer value widens its column from that line on (a stream cannot look
# ahead). The state column fits every state, the event column most event names.
MIN_WIDTHS = (6, 24, 12, 14, 8)


SIMPLE = simple.Spec(
    "unit",
    "?",
    flags={"--no-follow": ("follow", False), "--json": ("json", True)},
    options={"--since": simple.Option("since", count), "--replay": simple.Option("replay", count)},
    exclusive=("since", "replay"),
)


def register(subparsers: Any) -> None:
    import argparse  # noqa: PLC0415  (argparse is loaded already when a parser is built)

    p = subparsers.add_parser(
        "events",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("unit", metavar="UNIT", nargs="?", help="only this unit's events")
    first = p.add_mutually_exclusive_group()
    first.add_argument("--since", type=count, metavar="SEQ", help="first the kept events after SEQ")
    first.add_argument(
        "--replay", type=count, metavar="N",
        help=f"first the last N kept events (default {DEFAULT_REPLAY}; 0: none)",
    )  # fmt: skip
    p.add_argument(
        "--no-follow", dest="follow", action="store_false", help="stop after the kept events"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line, as the API")
    p.set_defaults(run=run)


def when(at: str) -> str:
    """The API's ISO 8601 time as fixed-width UTC to the millisecond (`...T14:50:56.123Z`)."""
    try:
        moment = dt.datetime.fromisoformat(at).astimezone(dt.UTC)
    except (TypeError, ValueError):
        return at
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Columns:
    """Lines laid out as the status table's, for a stream: widths only ever grow."""

    def __init__(self) -> None:
        self.widths = list(MIN_WIDTHS)
        self.fresh = True  # no header yet

    def header(self) -> str:
        self.fresh = False
        return self._join(list(HEADER))

    def line(self, event: dict[str, Any]) -> str:
        detail = " ".join(f"{k}={v}" for k, v in (event.get("detail") or {}).items())
        cells = [str(event.get("seq", "-")), when(event["at"]), event["unit"], event["event"],
                 event["state"], detail]  # fmt: skip
        return self._join([render.safe(cell) for cell in cells])

    def _join(self, cells: list[str]) -> str:
        self.widths = [max(w, len(c)) for w, c in zip(self.widths, cells, strict=False)]
        seq = cells[0].rjust(self.widths[0])
        rest = [c.ljust(w) for c, w in zip(cells[1:-1], self.widths[1:], strict=True)]
        return "  ".join([seq, *rest, cells[-1]]).rstrip()


@exits
def run(args: argparse.Namespace) -> int:
    replay = args.replay if args.replay is not None or args.since is not None else DEFAULT_REPLAY
    events = Client().events(args.unit, args.since, replay, args.follow)
    columns = None if args.json else Columns()
    try:
        for event in events:
            if columns is not None and columns.fresh:  # after the daemon said yes: no 404
                sys.stdout.write(columns.header() + "\n")
            text = jsonwrite.dumps(event) if columns is None else columns.line(event)
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:  # the way to end a followed stream
        pass
    return EXIT_OK
