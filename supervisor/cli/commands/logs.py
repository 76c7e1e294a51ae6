"""`sandboxctl logs UNIT [-n N] [-f] [--json]`: the service's captured stdout and stderr.

Through the daemon when it answers; when its socket is unreachable, from the log files
directly (cli/logfiles.py, with the daemon's own reader), after a one-line note on stderr.
"""

from __future__ import annotations

import itertools
import sys

from supervisor.cli import jsonwrite, simple, verbs
from supervisor.cli.arguments import count, path
from supervisor.cli.client import Client, Unreachable, exits
from supervisor.errors import EXIT_OK

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator
    from typing import Any, BinaryIO

HELP = verbs.HELP["logs"]
EPILOG = """\
prints what <unit>.log and its rotated files (<unit>.log.1 ... .N) hold, oldest first; -n N
takes the last N lines of that, across the rotated files too. With -f, keeps printing new
output, across log rotation and restarts of the service, until interrupted.

The files are the service's bytes as written: no time or stream is recorded per line. A unit
whose output goes only to the journal (output = "journal") has no log file: logs says so and
names the journalctl command (journalctl SANDBOXD_UNIT=<unit>).

--json prints one {"unit", "text"} object per line (text without its newline; bytes that are
not UTF-8 shown as \\xNN escapes).

Without a reachable daemon, the files are read directly (a note on stderr says so): from
--log-dir, else log_dir of the daemon config (--config, default /etc/sandboxd/sandboxd.toml).
Reading them needs root or membership of the daemon's group, as through the daemon.

exit status: 0; 1 the files cannot be read; 4 no such unit

EXAMPLE:
  sandboxctl logs web -n 50 -f
  sandboxctl logs web --json | jq -r .text
  sandboxctl logs web --log-dir /srv/sandboxd/log    # daemon down, logs moved
"""


_FOLLOW, _LINES = ("follow", True), simple.Option("lines", count)
SIMPLE = simple.Spec(
    "unit",
    flags={"-f": _FOLLOW, "--follow": _FOLLOW, "--json": ("json", True)},
    options={
        "-n": _LINES,
        "--lines": _LINES,
        "--config": simple.Option("config", path),
        "--log-dir": simple.Option("log_dir", path),
    },
)


def register(subparsers: Any) -> None:
    import argparse  # noqa: PLC0415  (argparse is loaded already when a parser is built)

    p = subparsers.add_parser(
        "logs",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("unit", metavar="UNIT", help="the unit whose output to print")
    p.add_argument(
        "-n", "--lines", type=count, metavar="N", help="only the last N lines (rotated files too)"
    )
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument(
        "--json",
        action="store_true",
        help='one {"unit": UNIT, "text": LINE} object per line of output (JSON lines)',
    )
    p.add_argument(
        "--config",
        type=path,
        metavar="PATH",
        help="without a daemon: the daemon config to read log_dir and units_dir from"
        " (default /etc/sandboxd/sandboxd.toml)",
    )
    p.add_argument(
        "--log-dir",
        type=path,
        metavar="DIR",
        help="without a daemon: read the log files here (overrides the config's log_dir)",
    )
    p.set_defaults(run=run)


class JsonLines:
    """Output bytes to JSON lines, one object per line; a last line without its newline is
    written at `close` (a followed stream may still complete it until then)."""

    def __init__(self, unit: str, out: BinaryIO) -> None:
        self.unit, self.out, self._partial = unit, out, b""

    def write(self, chunk: bytes) -> None:
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        if lines:
            self.out.write(b"".join(self._line(line) for line in lines))

    def close(self) -> None:
        if self._partial:
            self.out.write(self._line(self._partial))
            self._partial = b""

    def _line(self, raw: bytes) -> bytes:
        text = raw.decode("utf-8", "backslashreplace")
        return jsonwrite.dumps({"unit": self.unit, "text": text}).encode() + b"\n"


@exits
def run(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    sink = JsonLines(args.unit, out) if args.json else None

    def write(chunk: bytes) -> None:
        if sink is not None:
            sink.write(chunk)
        else:
            out.write(chunk)
        out.flush()

    try:
        try:
            chunks = _through_daemon(args)
        except Unreachable as exc:
            # Only before the first byte: the files hold the same output, none of it shown yet.
            # logfiles (asyncio, and the config's pydantic) is imported only here: ~40 ms.
            from supervisor.cli import logfiles  # noqa: PLC0415

            code = logfiles.read(
                args.unit, args.lines, args.follow, write,
                config=args.config, log_dir=args.log_dir, why=str(exc),
            )  # fmt: skip
        else:
            for chunk in chunks:
                write(chunk)
            code = EXIT_OK
    except KeyboardInterrupt:  # the way to end -f
        code = EXIT_OK
    if sink is not None:
        sink.close()
        out.flush()
    return code


def journal_note(unit: str, follow: bool) -> str:
    """What `logs` says of a unit whose output goes only to the journal."""
    command = f"journalctl SANDBOXD_UNIT={unit}" + (" -f" if follow else "")
    return (
        f'sandboxctl: {unit} sends its output to the journal (output = "journal"), not to '
        f"a log file; read it with: {command}"
    )


def _through_daemon(args: argparse.Namespace) -> Iterator[bytes]:
    """The daemon's stream with its first chunk already received, so that an unreachable
    daemon raises here, before anything is printed. A unit whose output goes only to the
    journal has no log file to show: a note says where its output is instead."""
    client = Client()
    if client.unit(args.unit).get("output") == "journal":
        print(journal_note(args.unit, args.follow), file=sys.stderr)
        return iter(())
    chunks = iter(client.logs(args.unit, args.lines, args.follow))
    first = next(chunks, b"")
    return itertools.chain([first] if first else [], chunks)
