"""Templates, instances and drop-ins: the pure part (no file system).

A unit may be made of several files: a template `web@.toml` (or a plain `web.toml`), then its
drop-ins `*.toml.d/*.toml` merged over it in lexical order of their file names. `merge` merges
table by table (a key set in a later file replaces that key; arrays are values, so they are
replaced, never appended to) and records which file set each key, so an error in the merged
table names the file the user must edit (`owner`). For an instance, `expand` replaces the
systemd-style specifiers in every string value; keys are never expanded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from supervisor.unit.diagnostics import KeyPath, UnitError, key_lines, locate, resolve

TEMPLATE_SECTION = "template"
DROPIN_DIR_SUFFIX = ".toml.d"
SPECIFIERS = {"i": "the instance", "n": "the unit name", "p": "the template's prefix"}
_SPECIFIER = re.compile(r"%(.?)", re.DOTALL)


@dataclass(frozen=True)
class Source:
    """One file of a unit: its path, text and parsed table."""

    path: str
    text: str
    data: dict[str, Any]


@dataclass
class Merged:
    """The merged table and, for each key path set, the file that set it last."""

    data: dict[str, Any] = field(default_factory=dict)
    owners: dict[tuple[str, ...], Source] = field(default_factory=dict)
    sources: list[Source] = field(default_factory=list)

    def add(self, source: Source) -> None:
        self.sources.append(source)
        _merge(self.data, source.data, source, self.owners, ())

    def owner(self, written: KeyPath) -> Source:
        """The file that set the longest prefix of `written` (the first file if none did)."""
        for end in range(len(written), 0, -1):
            prefix = written[:end]
            if all(isinstance(p, str) for p in prefix):
                found = self.owners.get(tuple(str(p) for p in prefix))
                if found is not None:
                    return found
        return self.sources[0]

    def error(self, loc: KeyPath, message: str) -> UnitError:
        """A UnitError about `loc` (a key path in the merged table), in the file that set it."""
        key, _, written = resolve(loc)
        source = self.owner(written)
        line = locate(key_lines(source.text), written)
        return UnitError(source.path, key or "unit", message, line)


def _merge(
    into: dict[str, Any],
    overlay: dict[str, Any],
    source: Source,
    owners: dict[tuple[str, ...], Source],
    prefix: tuple[str, ...],
) -> None:
    for key, value in overlay.items():
        path = (*prefix, key)
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            # Both tables: merged key by key; the table itself keeps its first owner.
            _merge(into[key], value, source, owners, path)
            continue
        into[key] = _copy(value)
        owners[path] = source
        if isinstance(value, dict):
            _own_all(value, source, owners, path)


def _own_all(
    table: dict[str, Any], source: Source, owners: dict[tuple[str, ...], Source], prefix: KeyPath
) -> None:
    for key, value in table.items():
        path = (*[str(p) for p in prefix], key)
        owners[path] = source
        if isinstance(value, dict):
            _own_all(value, source, owners, path)


def _copy(value: Any) -> Any:
    # The parsed tables of a cached file must not change when a drop-in is merged over them.
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


@dataclass(frozen=True)
class Instance:
    """What the specifiers of one instance expand to."""

    prefix: str  # "web" for web@8080
    instance: str  # "8080"

    @property
    def name(self) -> str:
        return f"{self.prefix}@{self.instance}"

    def value(self, letter: str) -> str | None:
        return {"i": self.instance, "n": self.name, "p": self.prefix, "%": "%"}.get(letter)


def expand_text(text: str, instance: Instance) -> str:
    """`text` with its specifiers expanded; ValueError names an unknown one."""

    def replace(match: re.Match[str]) -> str:
        letter = match.group(1)
        value = instance.value(letter)
        if value is not None:
            return value
        known = ", ".join(f"%{k} ({what})" for k, what in SPECIFIERS.items())
        if not letter:
            raise ValueError(f"a lone '%' ends the value: write %% for a literal %; known: {known}")
        raise ValueError(f"unknown specifier {'%' + letter!r}: use {known}, or %% for a literal %")

    return _SPECIFIER.sub(replace, text)


def expand(merged: Merged, instance: Instance) -> list[UnitError]:
    """Expand the specifiers in every string value of `merged.data`, in place."""
    errors: list[UnitError] = []

    def walk(value: Any, loc: KeyPath) -> Any:
        if isinstance(value, str):
            try:
                return expand_text(value, instance)
            except ValueError as exc:
                errors.append(merged.error(loc, str(exc)))
                return value
        if isinstance(value, dict):
            return {key: walk(item, (*loc, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, (*loc, index)) for index, item in enumerate(value)]
        return value

    merged.data = walk(merged.data, ())
    return errors
