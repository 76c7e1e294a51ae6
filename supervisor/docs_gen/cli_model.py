"""A command line as data: what the man pages and completions need from an argparse parser.

Walking `parser._actions` is what argparse offers for introspection (shtab and
argparse-manpage do the same); everything else here is plain data.
"""

from __future__ import annotations

import argparse
import enum
from dataclasses import dataclass
from pathlib import Path


class Kind(enum.Enum):
    """What a value on the command line is, so a shell knows what to offer for it."""

    NONE = "none"  # a flag: takes no value
    UNIT = "unit"  # a unit name
    PATH = "path"  # a file or directory
    CHOICE = "choice"  # one of `choices`
    COMMAND = "command"  # a command line of its own (`exec UNIT -- CMD...`)
    VALUE = "value"  # anything else: nothing to offer


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    metavar: str | None  # None: takes no value
    help: str
    kind: Kind
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Positional:
    metavar: str
    help: str
    kind: Kind
    repeats: bool  # nargs *, + or REMAINDER: takes every word from here on


@dataclass(frozen=True)
class Command:
    prog: str  # "sandboxctl status"
    name: str  # "status"
    summary: str  # the one line in the parent's verb list
    description: str
    epilog: str
    usage: str  # "sandboxctl status [-h] [--json] [UNIT ...]"
    options: tuple[Option, ...]
    positionals: tuple[Positional, ...]
    commands: tuple[Command, ...]


_PATH_METAVARS = {"PATH", "FILE", "DIR", "DIRECTORY"}


def _kind(action: argparse.Action, metavar: str) -> Kind:
    if action.nargs == 0:
        return Kind.NONE
    if action.nargs == argparse.REMAINDER:
        return Kind.COMMAND
    if action.choices:
        return Kind.CHOICE
    if action.type is Path or metavar.upper() in _PATH_METAVARS:
        return Kind.PATH
    if metavar.upper() == "UNIT":
        return Kind.UNIT
    return Kind.VALUE


def _metavar(action: argparse.Action) -> str:
    if isinstance(action.metavar, str):
        return action.metavar
    if isinstance(action.metavar, tuple):
        return " ".join(action.metavar)
    return action.dest.upper()


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if "%(" in text:  # argparse's own placeholders, as --help expands them
        text = text % {**vars(action), "prog": "", "default": action.default}
    return text


def from_parser(parser: argparse.ArgumentParser, name: str = "", summary: str = "") -> Command:
    options: list[Option] = []
    positionals: list[Positional] = []
    commands: list[Command] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            summaries = {a.dest: a.help or "" for a in action._choices_actions}
            for verb, sub in action.choices.items():
                commands.append(from_parser(sub, verb, summaries.get(verb, "")))
            continue
        metavar = _metavar(action)
        kind = _kind(action, metavar)
        if action.option_strings:
            options.append(
                Option(
                    flags=tuple(action.option_strings),
                    metavar=None if kind is Kind.NONE else metavar,
                    help=_help(action),
                    kind=kind,
                    choices=tuple(str(c) for c in action.choices or ()),
                )
            )
        else:
            repeats = action.nargs in ("*", "+", argparse.REMAINDER)
            positionals.append(Positional(metavar, _help(action), kind, repeats))
    usage = parser.format_usage().strip()
    usage = usage.removeprefix("usage:").strip()
    return Command(
        prog=parser.prog,
        name=name or parser.prog,
        summary=summary or parser.description or "",
        description=parser.description or "",
        epilog=parser.epilog or "",
        usage=" ".join(usage.split()),
        options=tuple(options),
        positionals=tuple(positionals),
        commands=tuple(commands),
    )


def sandboxctl() -> Command:
    from supervisor.cli import main  # noqa: PLC0415 (the CLI's modules load on demand)

    return from_parser(main.build_parser(main.every_module()))


def sandboxd() -> Command:
    from supervisor import daemon  # noqa: PLC0415 (the daemon's imports are heavy)

    return from_parser(daemon.build_parser())
