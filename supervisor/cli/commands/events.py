"""`sandboxctl events [UNIT] [--since SEQ | --replay N] [--no-follow] [--json]`: unit events."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from supervisor.cli import render
from supervisor.cli.arguments import count
from supervisor.cli.client import Client, exits
from supervisor.errors import EXIT_OK

HELP = "print unit events (started, exited, oom-kill, ...) as they happen, after recent ones"
EPILOG = """\
each line: SEQ AT UNIT EVENT STATE [DETAIL...]; SEQ numbers the events of one daemon run, so
--since SEQ resumes after the last one seen. The daemon keeps the last 1000 events; a later
daemon numbers from 1 again, and --since a number it has not reached yet prints all it keeps.
Without --no-follow, keeps printing new events until interrupted

EXAMPLE:
  sandboxctl events web --replay 20
  sandboxctl events --since 1234 --json --no-follow
"""


def register(subparsers: Any) -> None:
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
    first.add_argument("--replay", type=count, metavar="N", help="first the last N kept events")
    p.add_argument(
        "--no-follow", dest="follow", action="store_false", help="stop after the kept events"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line, as the API")
    p.set_defaults(run=run)


def line(event: dict[str, Any]) -> str:
    detail = " ".join(f"{k}={v}" for k, v in (event.get("detail") or {}).items())
    text = f"{event.get('seq', '-'):>6}  {event['at']}  {event['unit']}  {event['event']}"
    return render.safe(f"{text}  {event['state']}  {detail}".rstrip())


@exits
def run(args: argparse.Namespace) -> int:
    events = Client().events(args.unit, args.since, args.replay, args.follow)
    try:
        for event in events:
            text = json.dumps(event) if args.json else line(event)
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:  # the way to end a followed stream
        pass
    return EXIT_OK
