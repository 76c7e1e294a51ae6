"""`sandboxctl stop UNIT...`: stop units (stop_signal, then SIGKILL to the cgroup)."""

from __future__ import annotations

from supervisor.cli import verbs
from supervisor.cli.commands import unit_action

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    import argparse
    from typing import Any

HELP = verbs.HELP["stop"]
EPILOG = """\
a stopped unit stays stopped across reloads until started again

EXAMPLE:
  sandboxctl stop web
"""

SIMPLE = unit_action.SIMPLE


def register(subparsers: Any) -> None:
    unit_action.register(subparsers, "stop", HELP, EPILOG)


def run(args: argparse.Namespace) -> int:
    return unit_action.act("stop", args.units, args.json)
