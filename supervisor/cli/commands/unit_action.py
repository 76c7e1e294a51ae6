"""What `start`, `stop` and `restart` share: check every name first, act, report each unit.

Like systemctl, nothing is done when a name is unknown (exit 4); then each unit is acted on in
order and the command fails (exit 1) if any did not end in the state the verb promises. With
--json, stdout is one object naming each unit's outcome; the error lines stay on stderr.
"""

from __future__ import annotations

import sys

from supervisor.cli import jsonwrite, names, simple
from supervisor.cli.client import ApiError, Client, error, exits
from supervisor.errors import EXIT_FAILURE, EXIT_NO_SUCH_UNIT, EXIT_OK

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    from typing import Any

EXPECTED = {
    "start": (names.RUNNING, names.STARTING),
    "restart": (names.RUNNING, names.STARTING),
    "stop": (names.STOPPED, names.EXITED),
}


# start, stop and restart take the same line (their parsers are `register`'s).
SIMPLE = simple.Spec("units", "+", flags={"--json": ("json", True)})


def register(subparsers: Any, verb: str, help_text: str, epilog: str) -> None:
    import argparse  # noqa: PLC0415  (argparse is loaded already when a parser is built)

    p = subparsers.add_parser(
        verb,
        help=help_text,
        description=help_text,
        epilog=f"exit status: 0; 1 if a unit failed to {verb}; 4 if a unit does not exist\n\n"
        + epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("units", nargs="+", metavar="UNIT", help=f"the units to {verb}")
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"units": [{"name", "ok", "state", "error", "unit"}, ...]}, one per UNIT'
        " (unit: the unit's detail as status UNIT --json shows it)",
    )
    p.set_defaults(run=lambda args: act(verb, args.units, args.json))


def _result(
    name: str, ok: bool, error: str | None, unit: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One unit's outcome for --json: stable keys whether or not the daemon acted on it."""
    state = unit["state"] if unit is not None else None
    return {"name": name, "ok": ok, "state": state, "error": error, "unit": unit}


@exits
def act(verb: str, names: list[str], as_json: bool = False) -> int:
    client = Client()
    known = {u["name"] for u in client.units()}
    missing = [n for n in names if n not in known]
    for name in missing:
        error(f"no such unit: {name}")
    if missing:
        if as_json:
            results = [_result(n, False, "no such unit") for n in dict.fromkeys(missing)]
            _print_json(results)
        return EXIT_NO_SUCH_UNIT
    code = EXIT_OK
    results = []
    for name in dict.fromkeys(names):
        try:
            unit = client.action(name, verb)
        except ApiError as exc:
            error(f"{name}: {verb} failed: {exc.message}")
            results.append(_result(name, False, exc.message))
            code = max(code, exc.exit_code)
            continue
        state = unit["state"]
        if state in EXPECTED[verb]:
            results.append(_result(name, True, None, unit))
            if not as_json:
                print(f"{name}: {state}")
        else:
            why = unit.get("error") or unit.get("last_exit") or "no reason given"
            error(f"{name}: {verb} failed: unit is {state}: {why}")
            results.append(_result(name, False, f"unit is {state}: {why}", unit))
            code = max(code, EXIT_FAILURE)
    if as_json:
        _print_json(results)
    sys.stdout.flush()
    return code


def _print_json(results: list[dict[str, Any]]) -> None:
    print(jsonwrite.dumps({"units": results}))
