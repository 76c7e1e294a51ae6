"""`sandboxctl restart UNIT...`: stop, then start again with the current spec."""

from __future__ import annotations

from supervisor.cli import verbs
from supervisor.cli.commands import unit_action

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    import argparse
    from typing import Any

HELP = verbs.HELP["restart"]
EPILOG = """\
EXAMPLE:
  sandboxctl restart web
"""

SIMPLE = unit_action.SIMPLE


def register(subparsers: Any) -> None:
    unit_action.register(subparsers, "restart", HELP, EPILOG)


def run(args: argparse.Namespace) -> int:
    return unit_action.act("restart", args.units, args.json)
