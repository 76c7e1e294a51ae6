"""`sandboxctl run [--name N] [--wait] [--rm] [-p KEY=VALUE ...] [--] CMD ARG...`: a transient
unit, one with no file (the daemon keeps it under its state dir: see the README).

Without --wait it prints the unit's name once the start has had its effect. With --wait it
prints the service's output as it comes (the log, through the API), forwards SIGINT and
SIGTERM to its PID 1 (a second SIGINT stops the unit: a PID 1 without a handler ignores
signals), and exits with the service's status, once the unit's run is over and its output is
all printed (the daemon's `output_closed` event says how many bytes that is).
"""

from __future__ import annotations

from supervisor.cli import simple, verbs
from supervisor.cli.client import ApiError, Client, error, exits
from supervisor.cli.names import EXIT_CODE, LAUNCH_ERROR, OOM_KILLED, SIGNAL
from supervisor.cli.properties import PropertyError, build
from supervisor.errors import EXIT_FAILURE, EXIT_USAGE

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    import argparse
    from typing import Any

LAUNCH_FAILED = 126  # as a shell says of a command it could not run (and `exec` does)
HELP = verbs.HELP["run"]
EPILOG = f"""\
-p takes any key a unit file has, as SECTION.KEY=VALUE (VALUE is a TOML value, or else a
string: -p resources.memory_max=64M -p sandbox.root=/srv/root -p service.env.LANG=C), validated
as a file is. CMD is service.exec: a bare name is looked for in /usr/local/sbin ... /bin of the
sandbox's root. restart.policy defaults to "no" here. The name defaults to run-<8 hex digits>.

A transient unit survives a daemon restart (it is re-adopted) and `reload`, not a reboot; it is
not in units_dir and `validate` does not see it; `sandboxctl stop`, `start`, `status`, `logs`
work on it as on any unit; `--rm` removes it once its run is over (also without --wait).

exit status: without --wait 0, or 1 if it could not start; with --wait the service's own
(128+N for a signal N, 137 for an OOM kill, {LAUNCH_FAILED} if it could not start); 2 a bad -p
or command (naming the key); 5 the daemon is unreachable

EXAMPLE:
  sandboxctl run --wait --rm -p resources.memory_max=64M -- python3 -c 'print(42)'
  sandboxctl run --name scratch -p sandbox.root=/srv/root sleep 600
  sandboxctl stop scratch
"""
OOM_STATUS = 128 + 9  # as a shell reports a SIGKILLed command (SIGKILL is 9 on Linux)


SIMPLE = simple.Spec(
    "argv",
    simple.REMAINDER,
    flags={"--wait": ("wait", True), "--rm": ("rm", True)},
    options={
        "--name": simple.Option("name"),
        "-p": simple.Option("properties", append=True),
        "--property": simple.Option("properties", append=True),
    },
)


def register(subparsers: Any) -> None:
    import argparse  # noqa: PLC0415  (argparse is loaded already when a parser is built)

    p = subparsers.add_parser(
        "run",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--name", metavar="N", help="the unit's name (default: run-<8 hex digits>)")
    p.add_argument(
        "--wait",
        action="store_true",
        help="print its output, forward SIGINT/SIGTERM, exit with its status",
    )
    p.add_argument("--rm", action="store_true", help="remove the unit once its run is over")
    p.add_argument(
        "-p",
        "--property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="properties",
        help="a unit file key, SECTION.KEY=VALUE (repeatable)",
    )
    p.add_argument(
        "argv",
        nargs=argparse.REMAINDER,
        metavar="CMD ARG...",
        help="the command (service.exec); a bare name is looked for in the sandbox's root",
    )


def status_of(reason: str | None) -> int:
    """The exit status a shell would report for a run that ended for `reason`."""
    if reason is None:
        return EXIT_FAILURE
    if reason.startswith(EXIT_CODE):
        return int(reason.removeprefix(EXIT_CODE))
    if reason.startswith(SIGNAL):
        import signal  # noqa: PLC0415  (only with --wait: its Signals enum imports enum)

        try:
            return 128 + signal.Signals[reason.removeprefix(SIGNAL)]
        except KeyError:
            return EXIT_FAILURE
    if reason == OOM_KILLED:
        return OOM_STATUS
    if reason.startswith(LAUNCH_ERROR):
        return LAUNCH_FAILED
    return EXIT_FAILURE


@exits
def run(args: argparse.Namespace) -> int:
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    try:
        unit = build(args.properties, command)
    except PropertyError as exc:
        error(str(exc))
        return EXIT_USAGE
    client = Client()
    try:
        # With --wait the client starts it, once it follows the log: a short run with --rm
        # could otherwise be over (and gone) before the log is asked for.
        answer = client.create(unit, args.name, args.rm, start=not args.wait)
    except ApiError as exc:
        if exc.code != "invalid-unit":
            raise
        for problem in exc.errors or [exc.message]:
            error(f"invalid unit: {problem}")
        return EXIT_USAGE
    name, state = answer["name"], answer["unit"]["state"]
    if not args.wait:
        print(name)
        if state == "failed":
            error(f"{name}: {answer['unit'].get('error') or 'failed'}")
            return EXIT_FAILURE
        return 0
    # --wait's side (threads, signal forwarding) is imported only for it.
    from supervisor.cli.run_wait import Waiter  # noqa: PLC0415

    return Waiter(client, name).wait(int(answer["seq"]))
