"""`sandboxctl reload [--no-wait] [--timeout S] [--json]`: reconcile now, say what changed and,
unless --no-wait, how the units it started fared."""

from __future__ import annotations

import sys

from supervisor.cli import jsonwrite, render, settle, simple, verbs
from supervisor.cli.client import Client, exits
from supervisor.errors import EXIT_FAILURE, EXIT_OK

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    import argparse
    from typing import Any

HELP = verbs.HELP["reload"]
EPILOG = """\
new units start (if autostart), removed ones stop, changed ones restart (resource-only changes
apply live); an invalid file leaves the running version running. Then it waits (up to
--timeout) until every unit it started or restarted is running (ready, with ready = "notify"),
failed or in backoff, and prints each one's outcome. Exit 1 if a file is invalid, or a unit
failed, went into backoff after a failure, or did not settle in time

EXAMPLE:
  sandboxctl reload && echo "all unit files valid, applied, and their units running"
  sandboxctl reload --no-wait       # only what the reload did, at once
"""
DEFAULT_TIMEOUT = 60.0
# (key in the API's answer, what is printed before the names)
SECTIONS = (
    ("started", "started"),
    ("restarted", "restarted"),
    ("updated", "updated live"),
    ("stopped", "stopped"),
    ("removed", "removed"),
    ("deferred", "deferred (not started)"),
    ("fixed", "valid again, no change"),
)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value <= 86400:
        import argparse  # noqa: PLC0415  (only to refuse: argparse then reports it)

        why = (
            "must be above 0 and at most 86400 seconds"
            if value is not None
            else (f"not a number of seconds: {text!r}")
        )
        raise argparse.ArgumentTypeError(why)
    return value


SIMPLE = simple.Spec(
    flags={"--no-wait": ("wait", False), "--json": ("json", True)},
    options={"--timeout": simple.Option("timeout", _seconds, default=DEFAULT_TIMEOUT)},
)


def register(subparsers: Any) -> None:
    import argparse  # noqa: PLC0415  (argparse is loaded already when a parser is built)

    p = subparsers.add_parser(
        "reload",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--no-wait", dest="wait", action="store_false",
        help="print what the reload did and exit, without waiting for the units it started",
    )  # fmt: skip
    p.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="S",
        help=f"how long to wait for the units to settle (default {DEFAULT_TIMEOUT:g})",
    )  # fmt: skip
    p.add_argument(
        "--json", action="store_true",
        help='print the API\'s answer, plus "outcomes": {unit: {state, ok, text, event}}',
    )  # fmt: skip
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


def outcome_lines(outcomes: dict[str, settle.Outcome]) -> list[str]:
    return [f"{name}: {outcomes[name].text}" for name in sorted(outcomes)]


def wait(client: Client, result: dict[str, Any], timeout: float) -> dict[str, settle.Outcome]:
    """Follow the events since the reload's `seq` until every unit it started has settled."""
    units = [*result.get("started", []), *result.get("restarted", [])]
    if not units:
        return {}
    seq = result.get("seq")  # absent from an older daemon's answer: live events only
    events = client.events(since=seq, follow=True, deadline=settle.deadline(timeout))
    return settle.settle(events, units, int(seq or 0), timeout, lookup=client.units)


@exits
def run(args: argparse.Namespace) -> int:
    client = Client()
    result = client.reload()
    outcomes = wait(client, result, args.timeout) if args.wait else {}
    if args.json:
        answer = {**result, "outcomes": {n: o.to_json() for n, o in sorted(outcomes.items())}}
        sys.stdout.write(jsonwrite.dumps(answer) + "\n")
    else:
        lines = report(result) + outcome_lines(outcomes)
        sys.stdout.write("\n".join(map(render.safe, lines)) + "\n")
    failed = any(not o.ok for o in outcomes.values())
    return EXIT_FAILURE if result.get("invalid") or failed else EXIT_OK
