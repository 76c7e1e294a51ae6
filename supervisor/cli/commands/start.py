"""`sandboxctl start UNIT...`: start units (a failed unit is reset first)."""

from __future__ import annotations

from supervisor.cli import verbs
from supervisor.cli.commands import unit_action

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    import argparse
    from typing import Any

HELP = verbs.HELP["start"]
EPILOG = """\
EXAMPLE:
  sandboxctl start web worker
"""

SIMPLE = unit_action.SIMPLE


def register(subparsers: Any) -> None:
    unit_action.register(subparsers, "start", HELP, EPILOG)


def run(args: argparse.Namespace) -> int:
    return unit_action.act("start", args.units, args.json)
