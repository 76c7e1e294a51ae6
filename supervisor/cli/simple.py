"""A verb's plainly valid command line read without argparse (issue 23: argparse, with the
gettext, locale and `re` it imports, was ~6 ms of every `sandboxctl` call).

A verb module that declares `SIMPLE = Spec(...)` says what its parser takes: at most one
positional (a REMAINDER one takes every word from the first that is not an option on),
store_true/store_false flags, and options with one value (or appended, each time given).
`read` gives what argparse would give (the `Namespace`'s values) for a line made only of
those, and None for anything else: `--help`, a misspelt or abbreviated option, `--`, `-n5`, a
repeated option, a value argparse would refuse or that starts with `-`, a positional after
the options that followed another one. argparse then reads the line and says what is wrong
the one way it always has. tests/unit/cli/test_main.py holds each Spec to its verb's parser,
and the two readings to each other.
"""

from __future__ import annotations

from types import SimpleNamespace

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


REMAINDER = "..."  # argparse.REMAINDER's value, without importing argparse


class Option:
    """An option that takes one value: argparse's `type` (`convert`, None for the text
    itself), `choices` and `default`; with `append`, argparse's "append" action (each value
    added to a list, the default []). A value `convert` refuses (any exception) is left to
    argparse."""

    __slots__ = ("append", "choices", "convert", "default", "dest")

    def __init__(
        self,
        dest: str,
        convert: Callable[[str], object] | None = None,
        *,
        default: object = None,
        choices: Sequence[str] | None = None,
        append: bool = False,
    ) -> None:
        self.dest, self.convert, self.default, self.choices = dest, convert, default, choices
        self.append = append


class Spec:
    """What a verb's parser takes. `positional`: its dest (or None) with argparse's `nargs`
    (None: exactly one, "?", "*", "+" or REMAINDER) and `choices`; `flags`: option -> (dest,
    the value it stores: True for store_true, False for store_false); `options`: option ->
    Option; `exclusive`: dests of a mutually exclusive group."""

    __slots__ = ("choices", "exclusive", "flags", "nargs", "options", "positional")

    def __init__(
        self,
        positional: str | None = None,
        nargs: str | None = None,
        *,
        choices: Sequence[str] | None = None,
        flags: dict[str, tuple[str, bool]] | None = None,
        options: dict[str, Option] | None = None,
        exclusive: tuple[str, ...] = (),
    ) -> None:
        self.positional, self.nargs, self.choices = positional, nargs, choices
        self.flags = flags or {}
        self.options = options or {}
        self.exclusive = exclusive

    def defaults(self) -> dict[str, object]:
        values: dict[str, object] = {dest: not stored for dest, stored in self.flags.values()}
        values.update((o.dest, [] if o.append else o.default) for o in self.options.values())
        if self.positional is not None:
            values[self.positional] = [] if self.nargs in ("*", REMAINDER) else None
        return values


def read(verb: str, spec: Spec, words: Sequence[str]) -> SimpleNamespace | None:
    """argparse's reading of `verb WORDS...` when the line is plainly valid, else None."""
    values = spec.defaults()
    given: set[str] = set()  # the options' dests given (flags may repeat, as in argparse)
    positionals: list[str] = []
    closed = False  # an option came after positionals: argparse takes no more of them then
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("-"):
            if closed:
                return None
            positionals.append(word)
            if spec.nargs == REMAINDER:  # this word and every one after it, options too
                positionals += words[index:]
                break
            continue
        closed = bool(positionals)
        if word in spec.flags:
            dest, stored = spec.flags[word]
            values[dest] = stored
            given.add(dest)
            continue
        used = _option(spec, word, words[index:], values, given)
        if used is None:
            return None
        index += used
    if sum(dest in given for dest in spec.exclusive) > 1:
        return None
    if not _place(spec, positionals, values):
        return None
    return SimpleNamespace(command=verb, **values)


def _option(
    spec: Spec, word: str, rest: Sequence[str], values: dict[str, object], given: set[str]
) -> int | None:
    """Read the option `word` (`--opt=VALUE`, or `--opt VALUE` / `-o VALUE` with the value
    first in `rest`) into `values`: how many words of `rest` it took, None where argparse must
    read the line."""
    name, equals, text = word.partition("=") if word.startswith("--") else (word, "", "")
    option = spec.options.get(name)
    if option is None or (option.dest in given and not option.append):
        return None
    used = 0
    if not equals:
        if not rest:
            return None
        text, used = rest[0], 1
    value = _value(option, text)
    if value is None:
        return None
    previous = values[option.dest]
    if option.append and isinstance(previous, list):
        values[option.dest] = [*previous, value[0]]
    else:
        values[option.dest] = value[0]
    given.add(option.dest)
    return used


def _value(option: Option, text: str) -> tuple[object] | None:
    """(the option's value,) or None where argparse would refuse `text` or read it as an
    option (a value that starts with `-`)."""
    if text.startswith("-"):
        return None
    try:
        value = text if option.convert is None else option.convert(text)
    except Exception:
        return None
    if option.choices is not None and value not in option.choices:
        return None
    return (value,)


def _place(spec: Spec, positionals: list[str], values: dict[str, object]) -> bool:
    """Put the positional words in `values` as argparse would; False where it would refuse."""
    if spec.positional is None:
        return not positionals
    if spec.choices is not None and any(p not in spec.choices for p in positionals):
        return False
    if spec.nargs in ("*", "+", REMAINDER):
        values[spec.positional] = positionals
        return bool(positionals) or spec.nargs == "*"
    if len(positionals) > 1 or (spec.nargs is None and not positionals):
        return False
    if positionals:
        values[spec.positional] = positionals[0]
    return True
