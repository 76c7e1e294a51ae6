"""Argument types shared by sandboxctl verbs (argparse `type=` callables).

They import argparse only to raise its error: main.simple_args calls them too, without
argparse, and leaves a value they refuse to argparse, which then says what is wrong.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    from pathlib import Path


def count(text: str) -> int:
    """A whole number, 0 or more (`-n 50`, `--since 1234`); argparse names the option."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 0:
        import argparse  # noqa: PLC0415  (only to refuse: argparse then reports it)

        why = "must be 0 or more" if value is not None else f"not a number: {text!r}"
        raise argparse.ArgumentTypeError(why)
    return value


def path(text: str) -> Path:
    """A path (`--config`, `--log-dir`): pathlib is imported only when one is given."""
    from pathlib import Path  # noqa: PLC0415  (~3 ms, for options only the offline path reads)

    return Path(text)
