"""Unit files → validated `UnitSpec`s, one file or a whole directory, with every error reported.

A unit is `<name>.toml`; the name is the file stem and must be a safe name (UNIT_NAME). Problems
never escape as tracebacks: each becomes a `UnitError` line (see diagnostics.py for the
`FILE:LINE: KEY: message` shape) and a file with any error yields no spec at all.

`UnitLoader` keeps a cache so that `reload` with 1000 unchanged files costs stat + read + hash,
not TOML parsing and validation: an entry is reused when the content hash matches, and without
even reading when the stat signature (mtime, size, inode, device) matches and the file was
already older than the racy window when it was hashed (git's "racily clean" rule: an edit in
the same timestamp tick as our read could otherwise keep mtime and size).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import stat
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from supervisor.unit import checks, credentials
from supervisor.unit.diagnostics import (
    KEY_FILE,
    KEY_NAME,
    KEY_SYNTAX,
    UnitError,
    UnitFileError,
    from_validation,
    in_line_order,
    key_lines,
    locate,
)
from supervisor.unit.imagedefaults import KEY, ImageDefaultsError, apply_image, image_value
from supervisor.unit.schema import UNIT_NAME, UnitFile
from supervisor.unit.spec import UnitSpec

__all__ = [
    "DirectoryLoad",
    "UnitError",
    "UnitFileError",
    "UnitLoader",
    "load_unit",
    "parse_unit",
]

SUFFIX = ".toml"
# Far above any real unit (a few hundred bytes); keeps a stray log file from being parsed.
MAX_FILE_SIZE = 1 << 20
EMPTY_MESSAGE = "empty file: a unit needs at least [service] exec = [...]"
# A line that sets `image` (in [sandbox]); a false match only costs a parse.
_IMAGE_KEY = re.compile(r"^\s*image\s*=", re.MULTILINE)
# A [credentials] table (or a dotted or inline spelling of it).
_CREDENTIALS_KEY = re.compile(r"^\s*\[?\s*credentials\b", re.MULTILINE)
_RACY_NS = 2_000_000_000  # coarser than any filesystem timestamp granularity we meet
_TOML_WHERE = re.compile(
    r"^(?P<msg>.*) \(at (?:line (?P<line>\d+), column (?P<col>\d+)|end of document)\)$"
)


def _file_error(path: str, message: str, line: int | None = None) -> UnitFileError:
    return UnitFileError([UnitError(path, KEY_FILE, message, line)])


def _strerror(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def read_unit_bytes(path: str) -> tuple[bytes, os.stat_result]:
    """The file's bytes and stat; refuses what is not a regular file or is too large.

    O_NONBLOCK: a FIFO named `x.toml` must not hang the daemon's reload; it is then refused by
    the S_ISREG check.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise _file_error(path, f"cannot read: {_strerror(exc)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _file_error(path, "not a regular file")
        if st.st_size > MAX_FILE_SIZE:
            raise _file_error(path, f"file too large ({st.st_size} bytes; the limit is 1M)")
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_FILE_SIZE:  # grew after fstat
                raise _file_error(path, "file too large (the limit is 1M)")
        return b"".join(chunks), st
    except OSError as exc:
        raise _file_error(path, f"cannot read: {_strerror(exc)}") from None
    finally:
        os.close(fd)


def _name_error(path: str, name: str) -> UnitError | None:
    if UNIT_NAME.fullmatch(name):
        return None
    shown = repr(name) if len(name) <= 40 else repr(name[:40]) + "..."
    return UnitError(
        path,
        KEY_NAME,
        f"{shown} is not a valid unit name: use 1-63 letters, digits, '_', '.', '@' or '-', "
        "starting with a letter or digit",
    )


def _decode(path: str, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise _file_error(
            path, f"not valid UTF-8 (byte 0x{bad}): unit files are UTF-8 text", line
        ) from None
    # Editors on other systems may write a byte order mark; TOML itself does not allow one.
    return text.removeprefix("\ufeff")


def _parse_toml(path: str, text: str) -> dict[str, object]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "... (at line 3, column 7)"; that becomes the FILE:3:7: prefix.
        where = _TOML_WHERE.match(str(exc))
        line = column = None
        if where is None:
            message = str(exc)
        elif where["line"] is None:
            message = f"{where['msg']} (at end of file)"
        else:
            message, line, column = where["msg"], int(where["line"]), int(where["col"])
        message = "invalid TOML: " + message[:1].lower() + message[1:]
        raise UnitFileError([UnitError(path, KEY_SYNTAX, message, line, column)]) from None
    except RecursionError:
        raise UnitFileError(
            [UnitError(path, KEY_SYNTAX, "invalid TOML: nested too deeply")]
        ) from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise UnitFileError([UnitError(path, KEY_SYNTAX, f"invalid TOML: {exc}")]) from None


def parse_unit(path: str, name: str, data: bytes) -> UnitSpec:
    """Validate one unit's bytes; raises UnitFileError listing every problem found."""
    errors: list[UnitError] = []
    if (bad_name := _name_error(path, name)) is not None:
        errors.append(bad_name)
    try:
        text = _decode(path, data)
        if not text.strip():
            raise _file_error(path, EMPTY_MESSAGE)
        parsed: dict[str, Any] = _parse_toml(path, text)
        image = None
        if (value := image_value(parsed)) is not None:
            try:
                parsed, image = apply_image(parsed, value)
            except ImageDefaultsError as exc:
                errors.append(_with_line(UnitError(path, exc.key, exc.message), text))
        unit = UnitFile.model_validate(parsed)
    except UnitFileError as exc:
        raise UnitFileError(in_line_order(errors + exc.errors)) from None
    except ValidationError as exc:
        found = from_validation(path, exc, text)
        if any(e.key == KEY for e in errors):
            # The image would have given the command: no second error for the missing exec.
            found = [e for e in found if e.key not in ("service", "service.exec")]
        raise UnitFileError(in_line_order(errors + found)) from None
    secrets = None
    if unit.credentials:
        try:
            secrets = credentials.digest(credentials.read_all(unit.credentials))
        except credentials.CredentialError as exc:
            errors.append(_with_line(UnitError(path, exc.key, exc.message), text))
    if errors:
        raise UnitFileError(errors)
    return UnitSpec(name=name, path=path, unit=unit, image=image, credentials_digest=secrets)


def load_unit(path: str | os.PathLike[str], name: str | None = None) -> UnitSpec:
    """Load one unit file; `name` defaults to the file stem."""
    path = os.fspath(path)
    if name is None:
        base = os.path.basename(path)
        name = base.removesuffix(SUFFIX)
    data, _ = read_unit_bytes(path)
    return parse_unit(path, name, data)


@dataclass
class DirectoryLoad:
    """The outcome of loading a directory: valid specs, and errors of the rest, by unit name.

    A unit whose file name is not a valid unit name is keyed by its file name instead. Warnings
    (host checks: the exec binary or root is missing on this host) never block a unit.
    """

    specs: dict[str, UnitSpec] = field(default_factory=dict)
    errors: dict[str, list[UnitError]] = field(default_factory=dict)
    warnings: dict[str, list[UnitError]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class _Entry:
    signature: tuple[int, int, int, int]  # mtime_ns, size, inode, device
    digest: bytes
    hashed_at_ns: int
    text: str
    spec: UnitSpec | None
    errors: tuple[UnitError, ...]

    @property
    def trusted(self) -> bool:
        return self.hashed_at_ns - self.signature[0] > _RACY_NS


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


def _with_line(error: UnitError, text: str) -> UnitError:
    if error.line is not None or not text:
        return error
    loc: tuple[str | int, ...] = tuple(
        int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", error.key) if p
    )
    return dataclasses.replace(error, line=locate(key_lines(text), loc))


def located(errors: Iterable[UnitError], text: str) -> list[UnitError]:
    """`errors` of the file whose source is `text`, each given its key's line, in line order."""
    return in_line_order([_with_line(e, text) for e in errors])


class UnitLoader:
    """Loads unit directories, reusing the result for files that did not change."""

    def __init__(self, host_checks: bool = True) -> None:
        self._cache: dict[str, _Entry] = {}
        self._host_checks = host_checks

    def load_file(self, path: str, name: str) -> tuple[UnitSpec | None, list[UnitError], str]:
        """One file through the cache: (spec or None, errors, source text)."""
        cached = self._cache.get(path)
        try:
            sig = _signature(os.stat(path))
        except OSError:
            sig = None
        # An image unit is parsed again every time: its image may have changed on disk under
        # an unchanged file (a new digest for the tag), and `reload` must see that.
        # So is a unit with credentials: a secret file may change under it.
        image_unit = cached is not None and (
            _IMAGE_KEY.search(cached.text) is not None
            or _CREDENTIALS_KEY.search(cached.text) is not None
        )
        if cached is not None and cached.signature == sig and cached.trusted and not image_unit:
            return cached.spec, list(cached.errors), cached.text
        try:
            data, st = read_unit_bytes(path)
        except UnitFileError as exc:
            self._cache.pop(path, None)
            return None, exc.errors, ""
        digest = hashlib.sha256(data).digest()
        now = time.time_ns()
        if cached is not None and cached.digest == digest and not image_unit:
            entry = dataclasses.replace(cached, signature=_signature(st), hashed_at_ns=now)
        else:
            errors: tuple[UnitError, ...] = ()
            spec: UnitSpec | None = None
            try:
                spec = parse_unit(path, name, data)
            except UnitFileError as exc:
                spec, errors = None, tuple(exc.errors)
            text = data.decode("utf-8", errors="replace")
            entry = _Entry(_signature(st), digest, now, text, spec, errors)
        self._cache[path] = entry
        return entry.spec, list(entry.errors), entry.text

    def load_directory(self, directory: str | os.PathLike[str]) -> DirectoryLoad:
        """Every `*.toml` in `directory` (hidden files skipped), then the cross-unit checks."""
        directory = os.fspath(directory)
        try:
            names = sorted(
                entry
                for entry in os.listdir(directory)
                if entry.endswith(SUFFIX) and not entry.startswith(".")
            )
        except OSError as exc:
            raise UnitFileError(
                [UnitError(directory, "directory", f"cannot read: {_strerror(exc)}")]
            ) from None
        result = DirectoryLoad()
        texts: dict[str, str] = {}
        seen: set[str] = set()
        for file_name in names:
            path = os.path.join(directory, file_name)
            name = file_name.removesuffix(SUFFIX)
            seen.add(path)
            spec, errors, texts[name] = self.load_file(path, name)
            if spec is not None:
                result.specs[name] = spec
            else:
                result.errors[name if UNIT_NAME.fullmatch(name) else file_name] = errors
        for stale in self._cache.keys() - seen:
            del self._cache[stale]
        self._cross_check(result, set(result.specs) | set(result.errors), texts)
        if self._host_checks:
            for name, spec in result.specs.items():
                if warnings := checks.host_warnings(spec):
                    result.warnings[name] = located(warnings, texts.get(name, ""))
        return result

    @staticmethod
    def _cross_check(result: DirectoryLoad, known: set[str], texts: dict[str, str]) -> None:
        found = cross_unit_errors(result.specs, known)
        for name, errors in found.items():
            result.specs.pop(name)
            result.errors[name] = located(errors, texts.get(name, ""))


def cross_unit_errors(
    specs: dict[str, UnitSpec], known: Iterable[str]
) -> dict[str, list[UnitError]]:
    """`after` naming no unit file at all, and dependency cycles; keyed by unit name."""
    found: dict[str, list[UnitError]] = {}
    for name, errors in [*checks.unknown_after(specs, set(known)), *checks.cycles(specs)]:
        found.setdefault(name, []).extend(errors)
    return found
