"""`sandboxctl reload`: reconcile now and say what changed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from supervisor.cli import render
from supervisor.cli.client import Client, exits
from supervisor.errors import EXIT_FAILURE, EXIT_OK

HELP = "re-read every unit file and reconcile (like SIGHUP)"
EPILOG = """\
new units start (if autostart), removed ones stop, changed ones restart (resource-only changes
apply live); an invalid file leaves the running version running and makes reload exit 1

EXAMPLE:
  sandboxctl reload && echo "all unit files valid and applied"
"""
# (key in the API's answer, verb printed)
SECTIONS = (
    ("started", "started"),
    ("restarted", "restarted"),
    ("updated", "updated live"),
    ("stopped", "stopped"),
    ("deferred", "deferred (not started)"),
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "reload",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(run=run)


def report(result: dict[str, Any]) -> list[str]:
    lines = [f"{verb}: {', '.join(result[key])}" for key, verb in SECTIONS if result.get(key)]
    invalid: dict[str, list[str]] = result.get("invalid") or {}
    for name, errors in sorted(invalid.items()):
        lines.append(f"invalid: {name}")
        lines.extend(f"  {line}" for line in errors)
    if not lines:
        lines.append("nothing changed")
    return lines


@exits
def run(args: argparse.Namespace) -> int:
    result = Client().reload()
    sys.stdout.write("\n".join(map(render.safe, report(result))) + "\n")
    return EXIT_FAILURE if result.get("invalid") else EXIT_OK
