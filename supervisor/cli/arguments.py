"""Argument types shared by sandboxctl verbs (argparse `type=` callables)."""

from __future__ import annotations

import argparse


def count(text: str) -> int:
    """A whole number, 0 or more (`-n 50`, `--since 1234`); argparse names the option."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value
