"""Turn TOML and pydantic failures into one human line each: `FILE:LINE: KEY: message`.

KEY is the dotted path of the offending key as the user wrote it (`service.exec[0]`,
`sandbox.mounts[1].target`), or one of three pseudo-keys for problems above the key level:
`file` (cannot read, not UTF-8, empty, too large), `syntax` (not valid TOML) and `name` (the
file stem is not a safe unit name). LINE comes from tomllib for syntax errors and from a cheap
scan of `[section]` headers and `key =` lines for everything else; it is omitted when unknown.
"""

from __future__ import annotations

import json
import re
import types
import typing
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

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.key}: {self.message}"


class UnitFileError(SupervisorError):
    """A unit file does not load; `errors` holds every problem found, one line each."""

    def __init__(self, errors: list[UnitError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


# --- where in the source a key is -------------------------------------------------------------

_HEADER = re.compile(r"\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_SIMPLE_KEY = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_ASSIGN = re.compile(rf"\s*({_SIMPLE_KEY}(?:\s*\.\s*{_SIMPLE_KEY})*)\s*=")
_KEY_PART = re.compile(r"[A-Za-z0-9_-]+|\"([^\"]*)\"|'([^']*)'")


def _split_key(text: str) -> tuple[str, ...]:
    return tuple(m.group(1) or m.group(2) or m.group(0) for m in _KEY_PART.finditer(text))


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """First line (1-based) of every table header and `key =` line, by dotted key path.

    A heuristic, not a parser: it runs only on files that already parsed, and a wrong guess costs
    a line number, never an error. Lines inside multi-line strings may be misread; that is rare.
    """
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _HEADER.match(line):
            table = _split_key(header.group(1))
            lines.setdefault(table, number)
        elif assign := _ASSIGN.match(line):
            lines.setdefault(table + _split_key(assign.group(1)), number)
    return lines


def locate(lines: dict[tuple[str, ...], int], loc: tuple[str | int, ...]) -> int | None:
    """The line of the longest prefix of `loc` (string parts only) found in `lines`."""
    names: list[str] = []
    for part in loc:
        if not isinstance(part, str):
            break
        names.append(part)
    for end in range(len(names), 0, -1):
        if (found := lines.get(tuple(names[:end]))) is not None:
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


def resolve(loc: tuple[str | int, ...]) -> tuple[str, list[str]]:
    """The display key for a pydantic location, and the key names valid at its parent.

    Tags of discriminated unions (`sandbox.mounts.0.bind.target`) are dropped: the user never
    wrote "bind" there.
    """
    key = ""
    candidates: list[Any] = [UnitFile]
    choices: list[str] = list(UnitFile.model_fields)
    for part in loc:
        models = [t for t in candidates if isinstance(t, type) and issubclass(t, BaseModel)]
        choices = [name for m in models for name in m.model_fields]
        if isinstance(part, int):
            key += f"[{part}]"
            items = [typing.get_args(t) for t in candidates if typing.get_origin(t) is list]
            candidates = [u for args in items for a in args for u in _unwrap(a)]
            continue
        field = next((m.model_fields[part] for m in models if part in m.model_fields), None)
        if field is not None:
            key += f".{part}" if key else part
            candidates = _unwrap(field.annotation)
        elif (member := _tag_model(candidates, part)) is not None:
            candidates = [member]
        else:  # a key the user chose (an env name): written as TOML writes it
            key += f".{toml_key(part)}" if key else toml_key(part)
            candidates = []
    return key, choices


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


def from_validation(path: str, exc: ValidationError, text: str) -> list[UnitError]:
    lines = key_lines(text)
    errors: list[UnitError] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        sub_key = (err.get("ctx") or {}).get("key")
        if isinstance(sub_key, str):
            loc += tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", sub_key) if p)
        key, choices = resolve(loc)
        errors.append(UnitError(path, key or "unit", _message(err, choices), locate(lines, loc)))
    return errors
