"""What `start`, `stop` and `restart` share: check every name first, act, report each unit.

Like systemctl, nothing is done when a name is unknown (exit 4); then each unit is acted on in
order and the command fails (exit 1) if any did not end in the state the verb promises.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from supervisor.cli.client import ApiError, Client, error, exits
from supervisor.contract import State
from supervisor.errors import EXIT_FAILURE, EXIT_NO_SUCH_UNIT, EXIT_OK

EXPECTED = {
    "start": (State.RUNNING.value, State.STARTING.value),
    "restart": (State.RUNNING.value, State.STARTING.value),
    "stop": (State.STOPPED.value, State.EXITED.value),
}


def register(subparsers: Any, verb: str, help_text: str, epilog: str) -> None:
    p = subparsers.add_parser(
        verb,
        help=help_text,
        description=help_text,
        epilog=f"exit status: 0; 1 if a unit failed to {verb}; 4 if a unit does not exist\n\n"
        + epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("units", nargs="+", metavar="UNIT")
    p.set_defaults(run=lambda args: act(verb, args.units))


@exits
def act(verb: str, names: list[str]) -> int:
    client = Client()
    known = {u["name"] for u in client.units()}
    missing = [n for n in names if n not in known]
    for name in missing:
        error(f"no such unit: {name}")
    if missing:
        return EXIT_NO_SUCH_UNIT
    code = EXIT_OK
    for name in dict.fromkeys(names):
        try:
            unit = client.action(name, verb)
        except ApiError as exc:
            error(f"{name}: {verb} failed: {exc.message}")
            code = max(code, exc.exit_code)
            continue
        state = unit["state"]
        if state in EXPECTED[verb]:
            print(f"{name}: {state}")
        else:
            why = unit.get("error") or unit.get("last_exit") or "no reason given"
            error(f"{name}: {verb} failed: unit is {state}: {why}")
            code = max(code, EXIT_FAILURE)
    sys.stdout.flush()
    return code
