"""sandboxctl's argparse side: the parser of every verb (or of the one named), `--help`, usage
errors and their exit code 2. main.py imports this only for what its simple path does not take
(issue 23: argparse and the `re` it imports were ~5 ms of every call).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType

from supervisor import __version__
from supervisor.errors import EXIT_USAGE

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from supervisor.cli.main import _Listed
DESCRIPTION = "control sandboxd, the declarative sandbox supervisor"
EPILOG = """\
exit status: 0 ok; 1 failure or invalid units; 2 usage; 3 a named unit is not running;
4 no such unit; 5 the daemon is unreachable (socket: $SANDBOXD_SOCKET or
/run/sandboxd/control.sock; `logs` then reads the log files itself)

EXAMPLE:
  sandboxctl validate units/        # check unit files, no daemon needed
  sandboxctl status                 # every unit, one line each
  sandboxctl restart web
  sandboxctl run --wait --rm -p resources.memory_max=64M -- python3 -c 'print(42)'
"""


def _columns() -> int:
    """shutil.get_terminal_size().columns without importing shutil (with it bz2 and lzma, a few
    ms of every `sandboxctl` call: argparse asks for the width whenever a parser is built):
    $COLUMNS, else the terminal's, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class Parser(argparse.ArgumentParser):
    def _get_formatter(self) -> argparse.HelpFormatter:
        # typeshed's formatter protocol names `prog` only; every HelpFormatter takes `width`.
        width = _columns() - 2  # argparse's own margin
        return self.formatter_class(prog=self.prog, width=width)  # type: ignore[call-arg]


class VerbParser(Parser):
    """A verb's parser: when parsing fails and an option it does not know was given, that option
    is the error it reports (argparse would report a missing UNIT first: `logs --bogus`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unknown: list[str] = []

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._unknown = []
        for arg in args or ():
            if arg == "--":
                break
            if self._is_unknown_option(arg):
                self._unknown.append(arg)
        return super().parse_known_args(args, namespace)

    def _is_unknown_option(self, arg: str) -> bool:
        parsed: Any = self._parse_optional(arg)
        if parsed is None:  # a positional
            return False
        # Python 3.11 answers one (action, option, value) tuple, later versions a list of them.
        choices = parsed if isinstance(parsed, list) else [parsed]
        return all(choice[0] is None for choice in choices)

    def error(self, message: str) -> NoReturn:
        if self._unknown:
            message = f"unrecognized arguments: {' '.join(self._unknown)}"
        super().error(message)


def build_parser(modules: Mapping[str, ModuleType | _Listed]) -> argparse.ArgumentParser:
    """The top-level parser with each of `modules`' verbs: a verb's module adds its whole
    parser, main's stand-in (`_Listed`) only its name and help line."""
    parser = Parser(
        prog="sandboxctl",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sandboxctl {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=VerbParser
    )
    for module in modules.values():
        module.register(subparsers)
    return parser


def _parser_for(
    parser: argparse.ArgumentParser, argv: Sequence[str], verb: str, first_extra: str
) -> argparse.ArgumentParser:
    """The parser whose usage fits an unrecognized argument: the verb's when it came after the
    verb (argparse itself would show the top-level usage, which does not say what the verb
    takes), the top-level one when it came before."""
    if first_extra in argv[: list(argv).index(verb)]:
        return parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            verb_parser: argparse.ArgumentParser = action.choices[verb]
            return verb_parser
    return parser


def parse(
    argv: Sequence[str], modules: Mapping[str, ModuleType | _Listed]
) -> argparse.Namespace | int:
    """The arguments, or the exit code when argparse ended the call: 0 after --help or
    --version, 2 after a usage error (its message printed)."""
    parser = build_parser(modules)
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            _parser_for(parser, argv, args.command, extra[0]).error(
                f"unrecognized arguments: {' '.join(extra)}"
            )
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return args
