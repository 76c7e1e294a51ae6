"""`sandboxctl exec UNIT -- CMD...`: run CMD inside a running sandbox (root only)."""

from __future__ import annotations

import argparse
import os

from supervisor.cli import names, verbs
from supervisor.cli.client import Client, error, exits
from supervisor.errors import EXIT_FAILURE, EXIT_NOT_RUNNING, EXIT_USAGE

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    from typing import Any

HELP = verbs.HELP["exec"]
EPILOG = """\
CMD runs as the unit's user with its capabilities, no_new_privileges and seccomp filter,
inside its namespaces, root and cgroup (so it counts against the unit's limits); the
environment is the service's. Needs root. The exit status is CMD's (126: could not run it,
127: not found in the sandbox); 3 if the unit is not running, 4 if it does not exist

EXAMPLE:
  sandboxctl exec web -- /bin/sh -c 'id; cat /proc/self/status | grep Cap'
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "exec",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("unit", metavar="UNIT", help="the running unit to enter")
    p.add_argument(
        "argv",
        nargs=argparse.REMAINDER,
        metavar="-- CMD...",
        help="the command and its arguments, after -- (its options are its own)",
    )
    p.set_defaults(run=run)


@exits
def run(args: argparse.Namespace) -> int:
    command: list[str] = list(args.argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        error("exec: no command given (usage: sandboxctl exec UNIT -- CMD...)")
        return EXIT_USAGE
    if os.geteuid() != 0:
        error("exec: needs root (it enters the sandbox's namespaces itself)")
        return EXIT_FAILURE
    unit = Client().unit(args.unit)
    if unit["state"] != names.RUNNING or not unit.get("pid"):
        error(f"exec: {args.unit} is {unit['state']}, not running")
        return EXIT_NOT_RUNNING
    from supervisor.sandbox.child import enter  # noqa: PLC0415 - keeps `sandboxctl status` fast

    extra = {"TERM": os.environ["TERM"]} if "TERM" in os.environ else {}
    try:
        return enter.run(int(unit["pid"]), command, extra)
    except enter.EnterError as exc:
        error(f"exec: cannot enter {args.unit}: {exc}")
        return EXIT_FAILURE
