"""Turn TOML and pydantic failures into one human line each: `FILE:LINE: KEY: message`
(`FILE:LINE:COLUMN: ...` for TOML syntax errors, whose parser knows the column).

KEY is the dotted path of the offending key as the user wrote it (`service.exec[0]`,
`sandbox.mounts[1].target`), or one of three pseudo-keys for problems above the key level:
`file` (cannot read, not UTF-8, empty, too large), `syntax` (not valid TOML) and `name` (the
file stem is not a safe unit name). LINE comes from tomllib for syntax errors and from a cheap
scan of `[section]` headers and `key =` lines for everything else; it is omitted when unknown.
A file's problems are listed in line order (`in_line_order`), those without a line last, so a
reader fixes them top to bottom.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from supervisor.errors import SupervisorError
from supervisor.unit.schema import UnitFile, _did_you_mean

KEY_FILE = "file"
KEY_SYNTAX = "syntax"
KEY_NAME = "name"


@dataclass(frozen=True)
class UnitError:
    """One problem in one unit file; `str()` is the line users see."""

    path: str
    key: str
    message: str
    line: int | None = None
    column: int | None = None  # only with a line; 1-based, as editors count

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        return f"{where}: {self.key}: {self.message}"


def in_line_order(errors: list[UnitError]) -> list[UnitError]:
    """`errors` sorted by where they are in the file; those with no known line keep their order
    after the located ones (the sort is stable)."""
    return sorted(errors, key=lambda e: (e.line is None, e.line or 0, e.column or 0))


class UnitFileError(SupervisorError):
    """A unit file does not load; `errors` holds every problem found, one line each."""

    def __init__(self, errors: list[UnitError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


# --- where in the source a key is -------------------------------------------------------------

_HEADER = re.compile(r"\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_SIMPLE_KEY = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_ASSIGN = re.compile(rf"\s*({_SIMPLE_KEY}(?:\s*\.\s*{_SIMPLE_KEY})*)\s*=")
_KEY_PART = re.compile(r"[A-Za-z0-9_-]+|\"([^\"]*)\"|'([^']*)'")
# One inline table alone on its line of a multi-line array: `  { source = "/a", ... },`.
_INLINE_TABLE_LINE = re.compile(r"\s*\{[^{}]*\}\s*,?\s*(?:#.*)?$")
_ARRAY_OPEN = re.compile(r"\s*\[\s*(?:#.*)?$")

KeyPath = tuple[str | int, ...]


def _split_key(text: str) -> tuple[str, ...]:
    return tuple(m.group(1) or m.group(2) or m.group(0) for m in _KEY_PART.finditer(text))


def _opens_multiline_string(rest: str) -> str | None:
    """The delimiter of a multi-line string that `rest` (a value) opens and does not close."""
    for quote in ('"""', "'''"):
        if rest.count(quote) % 2 == 1:
            return quote
    return None


def key_lines(text: str) -> dict[KeyPath, int]:
    """First line (1-based) of every table header and `key =` line, by key path.

    Array elements get an int part where the file makes them plain: the Nth `[[a.b]]` header
    is ("a", "b", N-1), and in an array written one inline table per line, that line is
    ("key", N-1). A heuristic, not a parser: it runs only on files that already parsed, and a
    wrong guess costs a line number, never an error. Lines inside multi-line strings are
    skipped, so `key = ...` text in a script does not count.
    """
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    arrays: dict[tuple[str, ...], int] = {}  # [[path]] headers seen so far
    in_string: str | None = None  # the delimiter while inside a multi-line string
    array: KeyPath | None = None  # the key of a multi-line array being read
    element = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        if array is not None:
            if _INLINE_TABLE_LINE.match(line):
                lines.setdefault((*array, element), number)
                element += 1
                continue
            if line.strip().startswith("]"):
                array = None
                continue
            if line.strip() and not line.strip().startswith("#"):
                array = None  # not one table a line: element lines are unknown
        if header := _HEADER.match(line):
            path = _split_key(header.group(2))
            lines.setdefault(path, number)
            table = path
            if header.group(1) == "[[":
                arrays[path] = arrays.get(path, -1) + 1
                table = (*path, arrays[path])
                lines.setdefault(table, number)
        elif assign := _ASSIGN.match(line):
            key = (*table, *_split_key(assign.group(1)))
            lines.setdefault(key, number)
            rest = line[assign.end() :]
            in_string = _opens_multiline_string(rest)
            if _ARRAY_OPEN.match(rest):
                array, element = key, 0
    return lines


def locate(lines: dict[KeyPath, int], loc: KeyPath) -> int | None:
    """The line of the longest prefix of `loc` found in `lines`."""
    for end in range(len(loc), 0, -1):
        if (found := lines.get(tuple(loc[:end]))) is not None:
            return found
    return None


# --- pydantic errors -> UnitError -------------------------------------------------------------


def _unwrap(tp: Any) -> list[Any]:
    """The concrete types behind an annotation: Annotated and Optional/Union peeled off."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [t for arg in typing.get_args(tp) for t in _unwrap(arg)]
    return [tp]


def _tag_model(candidates: list[Any], tag: str) -> type[BaseModel] | None:
    """The member of a tagged union (mounts) whose `type` literal is `tag`."""
    for tp in candidates:
        if (
            isinstance(tp, type)
            and issubclass(tp, BaseModel)
            and "type" in tp.model_fields
            and tag in typing.get_args(tp.model_fields["type"].annotation)
        ):
            return tp
    return None


def resolve(loc: tuple[str | int, ...]) -> tuple[str, list[str], KeyPath]:
    """The display key for a pydantic location, the key names valid at its parent, and the
    location as written in the file (for `locate`).

    Tags of discriminated unions (`sandbox.mounts.0.bind.target`) are dropped: the user never
    wrote "bind" there.
    """
    key = ""
    written: list[str | int] = []
    candidates: list[Any] = [UnitFile]
    choices: list[str] = list(UnitFile.model_fields)
    for part in loc:
        models = [t for t in candidates if isinstance(t, type) and issubclass(t, BaseModel)]
        choices = [name for m in models for name in m.model_fields]
        if isinstance(part, int):
            key += f"[{part}]"
            written.append(part)
            items = [typing.get_args(t) for t in candidates if typing.get_origin(t) is list]
            candidates = [u for args in items for a in args for u in _unwrap(a)]
            continue
        field = next((m.model_fields[part] for m in models if part in m.model_fields), None)
        if field is not None:
            key += f".{part}" if key else part
            written.append(part)
            candidates = _unwrap(field.annotation)
        elif (member := _tag_model(candidates, part)) is not None:
            candidates = [member]
        else:  # a key the user chose (an env name): written as TOML writes it
            key += f".{toml_key(part)}" if key else toml_key(part)
            written.append(part)
            candidates = []
    return key, choices, tuple(written)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(name: str) -> str:
    """`name` as a TOML key: bare when it may be, else a quoted string with escapes, so that
    a key holding a newline or a terminal escape still makes one printable error line."""
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def _short_repr(value: Any) -> str | None:
    if isinstance(value, str | int | float | bool):
        text = repr(value)
        return text if len(text) <= 40 else None
    return None


def _message(err: ErrorDetails, choices: list[str]) -> str:
    kind, loc = err["type"], err["loc"]
    if kind == "extra_forbidden":
        if tuple(loc) == ("template",):  # compose.TEMPLATE_SECTION, outside a template
            return "only a template (NAME@.toml) or its drop-ins may have a [template] section"
        what = "unknown section" if len(loc) == 1 else "unknown key"
        return what + _did_you_mean(str(loc[-1]), choices)
    if kind == "missing":
        if loc == ("service",):
            return "missing [service]: a unit needs at least [service] exec = [...]"
        return "required key is missing"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        return f"unknown type {ctx.get('tag')!r}: expected one of {ctx.get('expected_tags')}"
    if kind == "too_short" and (err.get("ctx") or {}).get("actual_length") == 0:
        return "must not be empty"
    message = err["msg"]
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if kind == "unit_value":
        return message
    # pydantic's own wording ("Input should be a valid integer"): lower case per the CLI style,
    # plus the offending value when it is short enough to be useful.
    message = message[:1].lower() + message[1:]
    shown = _short_repr(err.get("input"))
    return f"{message}, got {shown}" if shown is not None else message


def from_validation(
    path: str,
    exc: ValidationError,
    text: str,
    place: Callable[[KeyPath, str], UnitError] | None = None,
) -> list[UnitError]:
    """One UnitError per pydantic error. `place(loc, message)` makes it when the table was
    merged from several files (compose.py: the file that set the key); by default it is in
    `path`, whose source is `text`."""
    lines = key_lines(text)
    errors: list[UnitError] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        sub_key = (err.get("ctx") or {}).get("key")
        if isinstance(sub_key, str):
            loc += tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", sub_key) if p)
        key, choices, written = resolve(loc)
        if place is not None:
            errors.append(place(loc, _message(err, choices)))
            continue
        line = locate(lines, written)
        errors.append(UnitError(path, key or "unit", _message(err, choices), line))
    return errors
