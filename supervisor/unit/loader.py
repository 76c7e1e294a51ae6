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
import errno
import hashlib
import os
import re
import stat
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from supervisor.unit import checks, compose
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
SYMLINK_MESSAGE = (
    "is a symlink: unit files and drop-ins are not followed through symlinks, except an "
    "instance's link to its own template in the same directory (web@8080.toml -> web@.toml)"
)
_RACY_NS = 2_000_000_000  # coarser than any filesystem timestamp granularity we meet
_TOML_WHERE = re.compile(
    r"^(?P<msg>.*) \(at (?:line (?P<line>\d+), column (?P<col>\d+)|end of document)\)$"
)


def _file_error(path: str, message: str, line: int | None = None) -> UnitFileError:
    return UnitFileError([UnitError(path, KEY_FILE, message, line)])


def _strerror(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def read_unit_bytes(path: str) -> tuple[bytes, os.stat_result]:
    """The file's bytes and stat; refuses what is not a regular file or is too large, and a
    symlink (the one link allowed, an instance's to its template, is resolved by the caller).

    O_NONBLOCK: a FIFO named `x.toml` must not hang the daemon's reload; it is then refused by
    the S_ISREG check.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _file_error(path, SYMLINK_MESSAGE) from None
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
        unit = UnitFile.model_validate(_parse_toml(path, text))
    except UnitFileError as exc:
        raise UnitFileError(in_line_order(errors + exc.errors)) from None
    except ValidationError as exc:
        raise UnitFileError(in_line_order(errors + from_validation(path, exc, text))) from None
    if errors:
        raise UnitFileError(errors)
    return UnitSpec(name=name, path=path, unit=unit)


def load_unit(path: str | os.PathLike[str], name: str | None = None) -> UnitSpec:
    """Load one unit file; `name` defaults to the file stem. A template's instance or a unit
    with drop-ins is composed from the files beside it, as the daemon would."""
    path = os.fspath(path)
    base = os.path.basename(path)
    if name is None:
        name = base.removesuffix(SUFFIX)
    directory = os.path.dirname(path) or "."
    if name != base.removesuffix(SUFFIX) or not base.endswith(SUFFIX):
        data, _ = read_unit_bytes(path)
        return parse_unit(path, name, data)
    if name.endswith("@"):
        raise _file_error(path, TEMPLATE_MESSAGE)
    composition = composition_of(directory, name)
    if composition is None:
        data, _ = read_unit_bytes(path)
        return parse_unit(path, name, data)
    spec, errors = composition.load({})
    if spec is None:
        raise UnitFileError(errors)
    return spec


TEMPLATE_MESSAGE = (
    "a template is never run by itself: name an instance (web@8080.toml, an empty file or a "
    "symlink to the template) or list them in its [template] instances"
)


def read_source(path: str) -> compose.Source:
    """One file of a composed unit, read and parsed (UnitFileError naming it otherwise)."""
    data, _ = read_unit_bytes(path)
    text = _decode(path, data)
    return compose.Source(path, text, _parse_toml(path, text))


def dropin_paths(directory: str, stem: str, listing: frozenset[str] | None = None) -> list[str]:
    """`STEM.toml.d/*.toml` in `directory`, in lexical order (hidden files skipped). `listing`,
    the directory's entries when the caller has them, spares a failing listdir per unit."""
    if listing is not None and stem + compose.DROPIN_DIR_SUFFIX not in listing:
        return []
    folder = os.path.join(directory, stem + compose.DROPIN_DIR_SUFFIX)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _file_error(folder, f"cannot read: {_strerror(exc)}") from None
    return [
        os.path.join(folder, n)
        for n in sorted(names)
        if n.endswith(SUFFIX) and not n.startswith(".")
    ]


@dataclass(frozen=True)
class Composition:
    """The files of one unit made of several: the base (plain file or template), drop-ins in
    merge order, and for an instance its enable file (empty or a symlink) if there is one."""

    name: str
    base: str
    dropins: tuple[str, ...] = ()
    instance: compose.Instance | None = None
    enable_file: str | None = None

    @property
    def sources(self) -> list[str]:
        first = [self.enable_file] if self.enable_file else []
        return [*first, self.base, *self.dropins]

    def load(
        self, memo: dict[str, compose.Source | UnitFileError]
    ) -> tuple[UnitSpec | None, list[UnitError]]:
        """Merge, expand and validate; `memo` shares parsed files between the instances of one
        template within one directory load."""
        errors: list[UnitError] = []
        sources: list[compose.Source] = []
        for path in [self.base, *self.dropins]:
            found = memo.get(path)
            if found is None:
                try:
                    found = read_source(path)
                except UnitFileError as exc:
                    found = exc
                memo[path] = found
            if isinstance(found, UnitFileError):
                errors.extend(found.errors)
            else:
                sources.append(found)
        if errors:
            return None, errors
        merged = compose.Merged()
        for source in sources:
            merged.add(source)
        if not merged.data:
            return None, [UnitError(self.base, KEY_FILE, EMPTY_MESSAGE)]
        template = merged.data.pop(compose.TEMPLATE_SECTION, None)
        if self.instance is None and template is not None:
            errors.append(
                merged.error(
                    (compose.TEMPLATE_SECTION,),
                    "only a template (NAME@.toml) or its drop-ins may have a [template] section",
                )
            )
        if self.instance is not None:
            errors.extend(compose.expand(merged, self.instance))
        try:
            unit = UnitFile.model_validate(merged.data)
        except ValidationError as exc:
            errors.extend(from_validation(self.base, exc, "", merged.error))
            return None, in_line_order(errors)
        if errors:
            return None, errors
        template_path = self.base if self.instance is not None else None
        spec = UnitSpec(self.name, self.base, unit, template=template_path, dropins=self.dropins)
        return spec, []


def _merged_dropins(
    directory: str, stems: list[str], listing: frozenset[str] | None
) -> tuple[str, ...]:
    """Drop-ins of several directories (template's, then instance's) by file name, lexical;
    for one file name in both, the later directory's (the instance's) wins, as in systemd."""
    by_name: dict[str, str] = {}
    for stem in stems:
        for path in dropin_paths(directory, stem, listing):
            by_name[os.path.basename(path)] = path
    return tuple(by_name[n] for n in sorted(by_name))


def composition_of(
    directory: str, name: str, listing: frozenset[str] | None = None
) -> Composition | None:
    """How unit `name` in `directory` is made, when more than its own file makes it (None:
    `NAME.toml` alone, or no such unit); raises UnitFileError for a refused enable file.
    `listing`: the directory's entries, when the caller has listed it."""
    path = os.path.join(directory, name + SUFFIX)
    prefix, at, instance = name.partition("@")
    if listing is not None and not (at and instance):  # the common case: no stat at all
        if name + SUFFIX not in listing:
            return None
        dropins = _merged_dropins(directory, [name], listing)
        return Composition(name, path, dropins) if dropins else None
    try:
        st: os.stat_result | None = os.lstat(path)
    except OSError:
        st = None
    if at and instance and (st is None or _is_enable_file(st)):
        template = os.path.join(directory, prefix + "@" + SUFFIX)
        if st is not None:
            _check_enable_file(path, st, template)
        elif not os.path.isfile(template):
            return None
        dropins = _merged_dropins(directory, [prefix + "@", name], listing)
        return Composition(
            name, template, dropins, compose.Instance(prefix, instance), path if st else None
        )
    if st is None:
        return None
    dropins = _merged_dropins(directory, [name], listing)
    return Composition(name, path, dropins) if dropins else None


def _is_enable_file(st: os.stat_result) -> bool:
    return stat.S_ISLNK(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_size == 0)


def _check_enable_file(path: str, st: os.stat_result, template: str) -> None:
    """An instance's own file: empty, or a symlink to exactly its template beside it."""
    if not os.path.isfile(template) or os.path.islink(template):
        raise _file_error(
            path,
            f"an instance file (empty or a symlink) needs its template {os.path.basename(template)}"
            " as a regular file in the same directory",
        )
    if not stat.S_ISLNK(st.st_mode):
        return
    try:
        target = os.readlink(path)
    except OSError as exc:
        raise _file_error(path, f"cannot read the symlink: {_strerror(exc)}") from None
    folder = os.path.dirname(path)
    resolved = os.path.normpath(os.path.join(folder, target))
    if resolved != os.path.normpath(template):
        raise _file_error(
            path,
            f"is a symlink to {target!r}: an instance file may only link to its own template "
            f"{os.path.basename(template)} in the same directory",
        )


def template_instances(
    template: compose.Source, dropins: list[compose.Source]
) -> tuple[list[str], list[UnitError]]:
    """The `[template] instances` of a template (its drop-ins merged), each checked as a name."""
    merged = compose.Merged()
    for source in [template, *dropins]:
        merged.add(source)
    section = merged.data.get(compose.TEMPLATE_SECTION)
    if section is None:
        return [], []
    key = (compose.TEMPLATE_SECTION,)
    if not isinstance(section, dict):
        return [], [merged.error(key, "must be a table: [template] instances = [...]")]
    errors = [
        merged.error((*key, extra), 'unknown key (the [template] section has only "instances")')
        for extra in section
        if extra != "instances"
    ]
    listed = section.get("instances", [])
    if not isinstance(listed, list):
        return [], [*errors, merged.error((*key, "instances"), "must be an array of strings")]
    prefix = os.path.basename(template.path).removesuffix("@" + SUFFIX)
    found: list[str] = []
    for index, item in enumerate(listed):
        where = (*key, "instances", index)
        if not isinstance(item, str):
            errors.append(merged.error(where, 'an instance is a string, such as "8080"'))
        elif (problem := instance_name_problem(prefix, item)) is not None:
            errors.append(merged.error(where, problem))
        elif item not in found:
            found.append(item)
    return found, errors


def load_template(path: str | os.PathLike[str]) -> tuple[list[UnitSpec], list[UnitError]]:
    """A template file checked on its own (`sandboxctl validate web@.toml`): every instance it
    has (listed, or an empty file or link beside it), composed as the daemon would, and the
    problems of the template's own section. ([], []) when it has no instance yet."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    stem = os.path.basename(path).removesuffix(SUFFIX)
    try:
        sources = [read_source(p) for p in [path, *dropin_paths(directory, stem)]]
    except UnitFileError as exc:
        return [], exc.errors
    listed, errors = template_instances(sources[0], sources[1:])
    names = [stem + instance for instance in listed]
    try:
        beside = sorted(os.listdir(directory))
    except OSError:
        beside = []
    for entry in beside:
        name = entry.removesuffix(SUFFIX)
        if entry.endswith(SUFFIX) and name.startswith(stem) and name != stem and name not in names:
            names.append(name)
    specs: list[UnitSpec] = []
    memo: dict[str, compose.Source | UnitFileError] = {}
    for name in names:
        try:
            composition = composition_of(directory, name)
        except UnitFileError as exc:
            errors.extend(exc.errors)
            continue
        if composition is None or composition.instance is None:
            continue  # a complete unit file of its own: not this template's
        spec, problems = composition.load(memo)
        if spec is not None:
            specs.append(spec)
        for problem in problems:  # one template error is every instance's: said once
            if problem not in errors:
                errors.append(problem)
    return specs, errors


def unit_names(directory: str | os.PathLike[str]) -> set[str]:
    """The names of the units `directory` defines, valid or not, without validating them:
    file stems (templates excepted) and the instances templates list. For the daemon's
    cleanup at start, which must not take a listed instance's network lease for a leftover."""
    directory = os.fspath(directory)
    try:
        names = [e for e in os.listdir(directory) if e.endswith(SUFFIX) and not e.startswith(".")]
    except OSError:
        return set()
    found: set[str] = set()
    for file_name in names:
        stem = file_name.removesuffix(SUFFIX)
        if not stem.endswith("@"):
            found.add(stem)
            continue
        try:
            sources = [read_source(p) for p in [os.path.join(directory, file_name),
                                                *dropin_paths(directory, stem)]]  # fmt: skip
        except UnitFileError:
            continue
        listed, _ = template_instances(sources[0], sources[1:])
        found.update(stem + instance for instance in listed)
    return found


def instance_name_problem(prefix: str, instance: str) -> str | None:
    """Why `prefix@instance` is not a usable unit name (None: it is)."""
    shown = repr(instance) if len(instance) <= 40 else repr(instance[:40]) + "..."
    if not instance:
        return "an instance name must not be empty"
    if "@" in instance or not UNIT_NAME.fullmatch(f"{prefix}@{instance}"):
        return (
            f"{shown} is not a valid instance name: use letters, digits, '_', '.' or '-' (no "
            f"'/', '@', spaces or control characters), {prefix}@INSTANCE at most 63 characters"
        )
    return None


@dataclass
class DirectoryLoad:
    """The outcome of loading a directory: valid specs, and errors of the rest, by unit name.

    A unit whose file name is not a valid unit name is keyed by its file name instead. Warnings
    (host checks: the exec binary or root is missing on this host) never block a unit.
    """

    specs: dict[str, UnitSpec] = field(default_factory=dict)
    errors: dict[str, list[UnitError]] = field(default_factory=dict)
    warnings: dict[str, list[UnitError]] = field(default_factory=dict)
    # Units made of several files: their files in merge order (instance file, base, drop-ins).
    sources: dict[str, list[str]] = field(default_factory=dict)
    # Problems of a template's own [template] section or file, by template path: its instances
    # are not units yet, so these are nobody's errors unless reported apart.
    template_errors: dict[str, list[UnitError]] = field(default_factory=dict)

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
        self._instances: dict[str, list[str]] = {}  # template path -> instances listed last
        self._template_errors: dict[str, list[UnitError]] = {}
        self._host_checks = host_checks

    def load_file(self, path: str, name: str) -> tuple[UnitSpec | None, list[UnitError], str]:
        """One file through the cache: (spec or None, errors, source text)."""
        cached = self._cache.get(path)
        try:  # lstat: a file replaced by a link to it must not look unchanged
            sig = _signature(os.lstat(path))
        except OSError:
            sig = None
        if cached is not None and cached.signature == sig and cached.trusted:
            return cached.spec, list(cached.errors), cached.text
        try:
            data, st = read_unit_bytes(path)
        except UnitFileError as exc:
            self._cache.pop(path, None)
            return None, exc.errors, ""
        digest = hashlib.sha256(data).digest()
        now = time.time_ns()
        if cached is not None and cached.digest == digest:
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
        """Every `*.toml` in `directory` (hidden files skipped), templates instantiated and
        drop-ins merged, then the cross-unit checks.

        Units made of several files (instances, drop-ins) are composed at every load, without
        the cache: they are few, and their result depends on more than one file's signature.
        """
        directory = os.fspath(directory)
        self._template_errors = {}
        try:
            entries = os.listdir(directory)
        except OSError as exc:
            raise UnitFileError(
                [UnitError(directory, "directory", f"cannot read: {_strerror(exc)}")]
            ) from None
        names = sorted(e for e in entries if e.endswith(SUFFIX) and not e.startswith("."))
        listing = frozenset(entries)
        result = DirectoryLoad()
        texts: dict[str, str] = {}
        seen: set[str] = set()
        memo: dict[str, compose.Source | UnitFileError] = {}
        instances: set[str] = set()
        for file_name in names:
            seen.add(os.path.join(directory, file_name))
            name = file_name.removesuffix(SUFFIX)
            if name.endswith("@"):  # a template: its instances are found below
                instances.update(self._listed_instances(directory, name, memo, listing))
            else:
                self._load_unit_file(directory, file_name, (memo, listing), result, texts)
        for name in sorted(instances - result.specs.keys() - result.errors.keys()):
            composition = composition_of(directory, name, listing)
            if composition is not None:
                self._compose(composition, memo, result, texts)
        for stale in self._cache.keys() - seen:
            del self._cache[stale]
        for template in self._instances.keys() - seen:
            del self._instances[template]
        result.template_errors = {
            p: errors for p, errors in self._template_errors.items() if p in seen and errors
        }
        self._cross_check(result, set(result.specs) | set(result.errors), texts)
        if self._host_checks:
            for name, spec in result.specs.items():
                if warnings := checks.host_warnings(spec):
                    result.warnings[name] = located(warnings, texts.get(name, ""))
        return result

    def _load_unit_file(
        self,
        directory: str,
        file_name: str,
        shared: tuple[dict[str, compose.Source | UnitFileError], frozenset[str]],
        result: DirectoryLoad,
        texts: dict[str, str],
    ) -> None:
        """One plain or instance file; `shared` is this load's (parsed files, dir entries)."""
        memo, listing = shared
        name = file_name.removesuffix(SUFFIX)
        key = name if UNIT_NAME.fullmatch(name) else file_name
        try:
            composition = composition_of(directory, name, listing)
        except UnitFileError as exc:
            result.errors[key] = exc.errors
            return
        if composition is not None:
            self._compose(composition, memo, result, texts)
            return
        spec, errors, texts[name] = self.load_file(os.path.join(directory, file_name), name)
        if spec is not None:
            result.specs[name] = spec
        else:
            result.errors[key] = errors

    def _compose(
        self,
        composition: Composition,
        memo: dict[str, compose.Source | UnitFileError],
        result: DirectoryLoad,
        texts: dict[str, str],
    ) -> None:
        spec, errors = composition.load(memo)
        name = composition.name
        result.sources[name] = composition.sources
        base = memo.get(composition.base)
        texts[name] = base.text if isinstance(base, compose.Source) else ""
        if spec is not None:
            result.specs[name] = spec
        else:
            result.errors[name] = errors

    def _listed_instances(
        self,
        directory: str,
        stem: str,
        memo: dict[str, compose.Source | UnitFileError],
        listing: frozenset[str],
    ) -> list[str]:
        """The instances a template lists, with its drop-ins. When the template (or one of its
        drop-ins) does not parse, the instances it listed last time: each is then invalid and
        keeps running its last valid version, instead of vanishing (and being stopped)."""
        path = os.path.join(directory, stem + SUFFIX)
        sources: list[compose.Source] = []
        try:
            for file in [path, *dropin_paths(directory, stem, listing)]:
                found = memo.get(file)
                if found is None:
                    try:
                        found = read_source(file)
                    except UnitFileError as exc:
                        found = exc
                    memo[file] = found
                if isinstance(found, UnitFileError):
                    raise found
                sources.append(found)
        except UnitFileError as exc:
            self._template_errors[path] = exc.errors
            return [stem + i for i in self._instances.get(path, [])]
        listed, errors = template_instances(sources[0], sources[1:])
        self._template_errors[path] = errors
        self._instances[path] = listed
        return [stem + i for i in listed]

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
