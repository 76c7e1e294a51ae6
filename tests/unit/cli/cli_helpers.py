"""Run sandboxctl verbs in-process through a parser built from their modules."""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from types import ModuleType

from supervisor.cli.commands import events, logs, reload, restart, start, status, stop
from supervisor.errors import EXIT_USAGE

VERBS: tuple[ModuleType, ...] = (status, reload, start, stop, restart, logs, events)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sandboxctl")
    sub = p.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        verb.register(sub)
    return p


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Result({self.code}, out={self.out!r}, err={self.err!r})"


def sandboxctl(*argv: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    buffer = io.BytesIO()
    out.buffer = buffer  # type: ignore[misc]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            args = parser().parse_args(argv)
            code = args.run(args)
        except SystemExit as exc:  # argparse: usage errors
            code = EXIT_USAGE if exc.code == 2 else int(exc.code or 0)
        sys.stdout.flush()
    return Result(code, out.getvalue() + buffer.getvalue().decode(), err.getvalue())
