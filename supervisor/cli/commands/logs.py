"""`sandboxctl logs UNIT [-n N] [-f]`: the service's captured stdout and stderr."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from supervisor.cli.arguments import count
from supervisor.cli.client import Client, exits
from supervisor.errors import EXIT_OK

HELP = "print a unit's output (stdout and stderr, as captured in log_dir/<unit>.log)"
EPILOG = """\
prints what <unit>.log and its rotated files (<unit>.log.1 ... .N) hold, oldest first; -n N
takes the last N lines of that, across the rotated files too. With -f, keeps printing new
output, across log rotation and restarts of the service, until interrupted

EXAMPLE:
  sandboxctl logs web -n 50 -f
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "logs",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("unit", metavar="UNIT")
    p.add_argument(
        "-n", "--lines", type=count, metavar="N", help="only the last N lines (rotated files too)"
    )
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.set_defaults(run=run)


@exits
def run(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    try:
        for chunk in Client().logs(args.unit, args.lines, args.follow):
            out.write(chunk)
            out.flush()
    except KeyboardInterrupt:  # the way to end -f
        pass
    return EXIT_OK
