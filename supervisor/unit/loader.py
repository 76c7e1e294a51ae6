"""Unit files → validated `UnitSpec`s, one file or a whole directory, with every error reported.

A unit is `<name>.toml`; the name is the file stem and must be a safe name (UNIT_NAME). Problems
never escape as tracebacks: each becomes a `UnitError` line (see diagnostics.py for the
`FILE:LINE: KEY: message` shape) and a file with any error yields no spec at all.

Reading one file safely is files.py; units made of several files (a template's instances,
drop-ins) are found by instances.py and merged by compose.py.

`UnitLoader` keeps a cache so that `reload` with 1000 unchanged files costs stat + read + hash,
not TOML parsing and validation: an entry is reused when the content hash matches, and without
even reading when the stat signature (mtime, ctime, size, inode, device) matches and the file
was already older than the racy window when it was hashed (git's "racily clean" rule: an edit in
the same timestamp tick as our read could otherwise keep mtime and size). The ctime is in it
because mtime can be put back (`touch -d`, `cp -p`, a deploy tool keeping timestamps) while
size stays; nobody can set ctime, and every write or utime moves it.

The daemon's loader (`watch=True`) skips even that stat: an inotify watch (linux/dirwatch.py)
on the directory and on each plain unit file names the files that may have changed since the
last load, and only those are looked at, read and hashed whatever their signature (the watch saw
an event: an edit in the same tick may keep mtime and size). A file is followed before it is
looked at, so a change after the look is in the next load's events. When the watch cannot say
(the first load, lost events, the directory swapped, a watch refused) every file goes through
the signature rule above. When it can, the plain files it follows and did not report are not
even looked at: their outcome is copied from the last load (plainkept.py).

Host checks (checks.py) are cached too, for the 5000-unit reload (issue 23): a unit whose spec
is the very object the last load checked (its file, and so its spec, unchanged) and whose host
warnings were none then is not checked again; a unit with warnings is checked at every load,
so a host that was fixed clears them. What this caches is "the binary, root, bind sources,
devices, users, CPUs and resolver a clean unit names were fine when its file was last read":
a host path removed after that is reported by the launch (`launch-error:`, as for a removal
between a reload and a restart), and `sandboxctl validate` (a fresh loader) checks it all.
The host's refusals (a published port a host process holds, pressure limits the host cannot
watch: `checks.host_errors`) are never cached: they change with the host's processes. They, and
the cross-unit checks, run at every load on the units they may refuse (`checks.concerns`, kept
per spec object: a unit with ports, dependencies or a pressure limit), not on all 5000.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from supervisor.linux import stamps
from supervisor.linux.dirwatch import DirectoryWatch
from supervisor.log import get_logger
from supervisor.unit import checks, compose, credentials
from supervisor.unit.compose import DROPIN_DIR_SUFFIX
from supervisor.unit.diagnostics import (
    KEY_NAME,
    UnitError,
    UnitFileError,
    from_validation,
    in_line_order,
    key_lines,
    locate,
)
from supervisor.unit.files import (
    EMPTY_MESSAGE,
    MAX_FILE_SIZE,
    SUFFIX,
    decode_text,
    file_error,
    parse_toml,
    read_unit_bytes,
    strerror,
)
from supervisor.unit.imagedefaults import KEY, ImageDefaultsError, apply_image, image_value
from supervisor.unit.instances import (
    TEMPLATE_MESSAGE,
    Composition,
    composition_of,
    dropin_paths,
    read_memoized,
    template_instances,
)
from supervisor.unit.perspec import PerSpec
from supervisor.unit.plainkept import PlainKept
from supervisor.unit.schema import UNIT_NAME, UnitFile
from supervisor.unit.spec import UnitSpec

__all__ = [
    "MAX_FILE_SIZE",
    "SUFFIX",
    "DirectoryLoad",
    "UnitError",
    "UnitFileError",
    "UnitLoader",
    "load_unit",
    "parse_unit",
]
log = get_logger()
# A line that sets `image` (in [sandbox]); a false match only costs a parse.
_IMAGE_KEY = re.compile(r"^\s*image\s*=", re.MULTILINE)
# A [credentials] table (or a dotted or inline spelling of it).
_CREDENTIALS_KEY = re.compile(r"^\s*\[?\s*credentials\b", re.MULTILINE)


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


def parse_unit(path: str, name: str, data: bytes) -> UnitSpec:
    """Validate one unit's bytes; raises UnitFileError listing every problem found."""
    errors: list[UnitError] = []
    if (bad_name := _name_error(path, name)) is not None:
        errors.append(bad_name)
    try:
        text = decode_text(path, data)
        if not text.strip():
            raise file_error(path, EMPTY_MESSAGE)
        parsed: dict[str, Any] = parse_toml(path, text)
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
        raise file_error(path, TEMPLATE_MESSAGE)
    composition = composition_of(directory, name)
    if composition is None:
        data, _ = read_unit_bytes(path)
        return parse_unit(path, name, data)
    spec, errors = composition.load({})
    if spec is None:
        raise UnitFileError(errors)
    return spec


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
    signature: tuple[int, int, int, int, int]  # mtime_ns, ctime_ns, size, inode, device
    digest: bytes
    hashed_at_ns: int
    text: str
    spec: UnitSpec | None
    errors: tuple[UnitError, ...]
    # An image unit is parsed again every time: its image may have changed on disk under an
    # unchanged file (a new digest for the tag), and `reload` must see that. So is a unit with
    # credentials: a secret file may change under it. Found once per content, not per load.
    reparse: bool

    @property
    def trusted(self) -> bool:
        # The later of mtime and ctime: a utime that puts mtime back is itself a change.
        return stamps.settled(self.signature[0], self.signature[1], self.hashed_at_ns)


def _signature(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)


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

    def __init__(self, host_checks: bool = True, watch: bool = False) -> None:
        self._cache: dict[str, _Entry] = {}
        # `watch` (the daemon's loader): an inotify watch on the directory tells which files
        # may have changed since the last load (module doc). The file names whose cache entry
        # was confirmed (read, or its signature checked) while their file was followed, with
        # no event about them since: reused without even an lstat.
        self._watching = watch
        self._watch: DirectoryWatch | None = None
        self._watched: set[str] = set()
        self._reported: set[str] = set()  # the names the watch said changed, at this load
        # The plain files' outcomes a watched load copies without a look at each (plainkept.py)
        # and the directory's entries at the last load (what is new, what is gone).
        self._plain = PlainKept()
        self._listing: frozenset[str] = frozenset()
        self._instances: dict[str, list[str]] = {}  # template path -> instances listed last
        self._template_errors: dict[str, list[UnitError]] = {}
        self._host_checks = host_checks
        # unit name -> the spec whose host warnings were none at the last load (module doc).
        self._clean: dict[str, UnitSpec] = {}
        self._concerns = PerSpec(checks.concerns)  # which checks may refuse each unit

    def load_file(
        self, path: str, name: str, reread: bool = False
    ) -> tuple[UnitSpec | None, list[UnitError], str]:
        """One file through the cache: (spec or None, errors, source text). `reread`: the
        watch saw the file change, so its content is hashed whatever its signature says (an
        edit may keep mtime, size and inode)."""
        cached = self._cache.get(path)
        image_unit = cached is not None and cached.reparse
        if cached is not None and not reread and not image_unit and cached.trusted:
            try:  # lstat: a file replaced by a link to it must not look unchanged
                if cached.signature == _signature(os.lstat(path)):
                    return cached.spec, list(cached.errors), cached.text
            except OSError:
                pass
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
            reparse = (
                _IMAGE_KEY.search(text) is not None or _CREDENTIALS_KEY.search(text) is not None
            )
            entry = _Entry(_signature(st), digest, now, text, spec, errors, reparse)
        self._cache[path] = entry
        return entry.spec, list(entry.errors), entry.text

    def retain(self, paths: set[str]) -> None:
        """Forget the cached files not in `paths` (`load_file`'s callers: a file that is gone
        must not keep its spec; `load_directory` does this itself)."""
        for stale in self._cache.keys() - paths:
            del self._cache[stale]

    def close(self) -> None:
        """Drop the directory watch (a loader made with `watch`)."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self._watched.clear()
        self._plain.clear()

    def _follow_changes(self, directory: str) -> bool:
        """Forget, of `_watched`, the files the watch says may have changed since the last load
        (all of them when it cannot say: events lost, the directory swapped, no watch yet).
        True: the watch said which (`_reported`)."""
        if not self._watching:
            return False
        watch = self._watch
        if watch is not None and watch.path == directory and not watch.broken:
            changed = watch.changes()
            if changed is not None:
                self._watched.difference_update(changed)
                self._reported = changed
                return True
            if not watch.broken:  # events were lost: every file is checked once, as at start
                self._watched.clear()
                self._reported = set()
                return False
        self.close()
        self._reported = set()
        try:
            self._watch = DirectoryWatch(directory)
        except OSError as exc:  # no inotify instance or watch left: every file is checked
            log.warning("unit.directory_unwatched", directory=directory, error=strerror(exc))
        return False

    def load_directory(self, directory: str | os.PathLike[str]) -> DirectoryLoad:
        """Every `*.toml` in `directory` (hidden files skipped), templates instantiated and
        drop-ins merged, then the cross-unit checks.

        Units made of several files (instances, drop-ins) are composed at every load, without
        the cache: they are few, and their result depends on more than one file's signature.
        When the watch says what changed, the plain files it follows and did not report are
        copied from the last load as they were (plainkept.py), not looked at one by one.
        """
        directory = os.fspath(directory)
        self._template_errors = {}
        plain = self._plain
        listing, candidates, gone = self._list(directory)
        names = sorted(e for e in candidates if e.endswith(SUFFIX) and not e.startswith("."))
        result = DirectoryLoad()
        texts: dict[str, str] = {}
        seen: set[str] = set()
        memo: dict[str, compose.Source | UnitFileError] = {}
        instances: set[str] = set()
        prefix = os.path.join(directory, "")  # joined once: 5000 os.path.join showed
        for file_name in names:
            seen.add(prefix + file_name)
            name = file_name.removesuffix(SUFFIX)
            if name.endswith("@"):  # a template: its instances are found below
                instances.update(self._listed_instances(directory, name, memo, listing))
            else:
                file = (file_name, prefix + file_name)
                self._load_unit_file(file, (directory, memo, listing), result, texts)
        for name in sorted(instances - result.specs.keys() - result.errors.keys()):
            composition = composition_of(directory, name, listing)
            if composition is not None:
                self._compose(composition, memo, result, texts)
        if gone is None:
            for stale in self._cache.keys() - seen:
                del self._cache[stale]
            for template in self._instances.keys() - seen:
                del self._instances[template]
        else:  # the kept files were not looked at: what is stale is what left the listing
            for entry in gone:
                self._cache.pop(prefix + entry, None)
                self._instances.pop(prefix + entry, None)
            # The kept (and those just kept) first, overridden by what this load found.
            result.specs = {**plain.specs, **result.specs}
            result.errors = {**plain.errors, **result.errors}
            texts = {**plain.texts, **texts}
        result.template_errors = {
            p: errors for p, errors in self._template_errors.items() if p in seen and errors
        }
        concerned = self._concerns.values(result.specs)
        across = {n: s for n, s in result.specs.items() if concerned[n][0]}
        self._cross_check(result, across, set(result.specs) | set(result.errors), texts)
        if self._host_checks:
            refusable = [n for n, c in concerned.items() if c[1] and n in result.specs]
            self._check_on_host(result, refusable, texts)
        return result

    def _list(self, directory: str) -> tuple[frozenset[str], frozenset[str], frozenset[str] | None]:
        """The directory's entries; those of them to look at: all of them, or, when the watch
        says what changed, all but the kept plain files it did not report; and then the
        entries gone since the last load (None: every entry is looked at)."""
        known = self._follow_changes(directory)  # before the listing: what changes after is told
        try:
            listing = frozenset(os.listdir(directory))
        except OSError as exc:
            self._plain.clear()
            raise UnitFileError(
                [UnitError(directory, "directory", f"cannot read: {strerror(exc)}")]
            ) from None
        plain, last, self._listing = self._plain, self._listing, listing
        if not known or plain.directory != directory:
            plain.clear(directory if known else None)
            return listing, listing, None
        gone = last - listing
        plain.forget(self._reported)
        plain.forget(listing - last)  # a NAME.toml.d appearing makes NAME a composed unit
        plain.forget(gone)
        return listing, listing - plain.files, gone

    def _check_on_host(
        self, result: DirectoryLoad, refusable: list[str], texts: dict[str, str]
    ) -> None:
        """What only this host can tell: a published port a host process holds or a pressure
        limit it cannot watch (errors; checked afresh at every load for `refusable`, the units
        that have either: checks.concerns), and the host checks' warnings (the exec binary or
        root missing here), those of a clean unchanged unit taken as they were (module doc)."""
        for name in refusable:
            if refused := checks.host_errors(result.specs[name]):
                result.specs.pop(name)
                result.errors[name] = located(refused, texts.get(name, ""))
        clean: dict[str, UnitSpec] = {}
        for name, spec in result.specs.items():
            if self._clean.get(name) is spec:
                clean[name] = spec
            elif warnings := checks.host_warnings(spec):
                result.warnings[name] = located(warnings, texts.get(name, ""))
            else:
                clean[name] = spec
        self._clean = clean

    def _load_unit_file(
        self,
        file: tuple[str, str],
        shared: tuple[str, dict[str, compose.Source | UnitFileError], frozenset[str]],
        result: DirectoryLoad,
        texts: dict[str, str],
    ) -> None:
        """One plain or instance `file` (its name, its path); `shared` is this load's
        (directory, parsed files, dir entries)."""
        (file_name, path), (directory, memo, listing) = file, shared
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
        spec, errors, texts[name] = self._watched_file(path, file_name, name)
        if spec is not None:
            result.specs[name] = spec
        else:
            result.errors[key] = errors
        kept = (
            self._plain.directory is not None
            and key == name
            and "@" not in name
            and file_name in self._watched
            and name + DROPIN_DIR_SUFFIX not in listing
        )
        if kept:
            self._plain.put(name, spec, errors, texts[name])
        else:
            self._plain.drop(name)

    def _watched_file(
        self, path: str, file_name: str, name: str
    ) -> tuple[UnitSpec | None, list[UnitError], str]:
        """`load_file`, without even its lstat for a file the watch saw no change to since its
        entry was confirmed. The file is followed before it is looked at: a change after
        that look is in the next load's events."""
        cached = self._cache.get(path)
        if cached is not None and not cached.reparse and file_name in self._watched:
            return cached.spec, list(cached.errors), cached.text
        watch = self._watch
        followed = watch is not None and watch.follow(file_name)
        found = self.load_file(path, name, reread=file_name in self._reported)
        entry = self._cache.get(path)
        if followed and entry is not None and not entry.reparse:
            self._watched.add(file_name)
        else:
            self._watched.discard(file_name)
        return found

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
                found = read_memoized(file, memo)
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
    def _cross_check(
        result: DirectoryLoad,
        across: dict[str, UnitSpec],
        known: set[str],
        texts: dict[str, str],
    ) -> None:
        """The cross-unit errors of `across`, the units of `result` a cross-unit check may
        refuse (checks.concerns): the same as of all of them, found without walking 5000."""
        found = cross_unit_errors(across, known)
        for name, errors in found.items():
            result.specs.pop(name)
            result.errors[name] = located(errors, texts.get(name, ""))


def cross_unit_errors(
    specs: dict[str, UnitSpec], known: Iterable[str]
) -> dict[str, list[UnitError]]:
    """`after` naming no unit file at all, dependency cycles, and ports two units publish;
    keyed by unit name."""
    found: dict[str, list[UnitError]] = {}
    found_all = [
        *checks.unknown_after(specs, set(known)),
        *checks.cycles(specs),
        *checks.port_conflicts(specs),
    ]
    for name, errors in found_all:
        found.setdefault(name, []).extend(errors)
    return found
