"""`sandboxctl`: a table of thin verbs (crun's `commands[]`), each in `commands/<verb>.py`.

A verb module exposes `register(subparsers)`, which adds its sub-parser (help text with an
EXAMPLE), and `run(args) -> int`, which returns the contract's exit code: 0 ok, 1 failure,
2 usage, 3 not running, 4 no such unit, 5 daemon unreachable. Errors are one line on stderr,
lower case, no final period.
"""

from __future__ import annotations

import sys
from types import ModuleType, SimpleNamespace

from supervisor.cli import simple
from supervisor.errors import SupervisorError

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping, Sequence
    from typing import Any

# verb -> module; the order is the order of `sandboxctl --help`.
COMMANDS: dict[str, str] = {
    "status": "supervisor.cli.commands.status",
    "top": "supervisor.cli.commands.top",
    "reload": "supervisor.cli.commands.reload",
    "start": "supervisor.cli.commands.start",
    "stop": "supervisor.cli.commands.stop",
    "restart": "supervisor.cli.commands.restart",
    "run": "supervisor.cli.commands.run",
    "logs": "supervisor.cli.commands.logs",
    "events": "supervisor.cli.commands.events",
    "exec": "supervisor.cli.commands.exec",
    "validate": "supervisor.cli.commands.validate",
    "images": "supervisor.cli.commands.images",
    "cat": "supervisor.cli.commands.cat",
    "fleet": "supervisor.cli.commands.fleet",
}


def simple_args(argv: Sequence[str]) -> SimpleNamespace | None:
    """What argparse would make of `argv` (`command` and each argument's dest), when the verb
    declares a `SIMPLE` spec (every verb that only asks the daemon, but `exec`) and
    the line is plainly valid; None for argparse to read it (cli/simple.py)."""
    if not argv or argv[0] not in COMMANDS:
        return None
    spec = getattr(_load(COMMANDS[argv[0]]), "SIMPLE", None)
    return None if spec is None else simple.read(argv[0], spec, argv[1:])


def _modules(argv: Sequence[str]) -> Mapping[str, ModuleType | _Listed]:
    """The named verb's module alone when argv starts with a verb (a verb's parser does not
    depend on the others, and importing all of them is a tenth of `sandboxctl status`);
    every module when a verb comes later (`--bogus status`: its parser tells which arguments
    are unknown). With no verb at all (`--help`, `--version`, none, an unknown one) only the
    verbs' names and one-line help are needed: those come from verbs.py, no module is
    imported, and the text is the same (tests/unit/cli/test_main.py)."""
    if argv and argv[0] in COMMANDS:
        return {argv[0]: _load(COMMANDS[argv[0]])}
    if any(arg in COMMANDS for arg in argv):
        return every_module()
    return {verb: _Listed(verb) for verb in COMMANDS}


def every_module() -> dict[str, ModuleType]:
    """Every verb's module, in the table's order (the man pages and completions need them all)."""
    return {verb: _load(module) for verb, module in COMMANDS.items()}


class _Listed:
    """A verb as the top-level parser lists it: its name and its help line (verbs.py), with no
    arguments of its own, standing in for its module where none is parsed."""

    def __init__(self, verb: str) -> None:
        self.verb = verb

    def register(self, subparsers: Any) -> None:
        from supervisor.cli import verbs  # noqa: PLC0415  (only for a line with no verb)

        subparsers.add_parser(self.verb, help=verbs.HELP[self.verb])


def _load(name: str) -> ModuleType:
    """importlib.import_module(name) without importing importlib (and the warnings module it
    imports): the import statement's own machinery, then the module by its full name."""
    __import__(name)
    return sys.modules[name]


def build_parser(modules: Mapping[str, ModuleType | _Listed]) -> argparse.ArgumentParser:
    """Every verb's parser in `modules` under the top-level one (the man pages, completions and
    `--help` are made from it)."""
    from supervisor.cli import parsing  # noqa: PLC0415  (argparse: not on the simple path)

    return parsing.build_parser(modules)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    args: SimpleNamespace | argparse.Namespace | None = simple_args(argv)
    if args is None:
        from supervisor.cli import parsing  # noqa: PLC0415  (argparse: not on the simple path)

        parsed = parsing.parse(argv, _modules(argv))
        if isinstance(parsed, int):
            return parsed
        args = parsed
    module = _load(COMMANDS[args.command])
    try:
        code: int = module.run(args)
    except SupervisorError as exc:
        print(f"sandboxctl: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
