"""Which files make a unit on disk: templates and their instances, drop-in directories.

`composition_of` says what a unit name is made of (None: its own file alone, the common case
the loader caches); `Composition.load` reads, merges (compose.py), expands and validates it.
An instance exists when `PREFIX@INSTANCE.toml` is empty or a symlink to `PREFIX@.toml` beside
it, or when the template lists it in `[template] instances`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from supervisor.images.oci import Image
from supervisor.unit import compose, credentials
from supervisor.unit.diagnostics import (
    KEY_FILE,
    UnitError,
    UnitFileError,
    from_validation,
    in_line_order,
)
from supervisor.unit.files import (
    EMPTY_MESSAGE,
    SUFFIX,
    file_error,
    read_source,
    strerror,
)
from supervisor.unit.imagedefaults import ImageDefaultsError, apply_image, image_value
from supervisor.unit.schema import UNIT_NAME, UnitFile
from supervisor.unit.spec import UnitSpec

TEMPLATE_MESSAGE = (
    "a template is never run by itself: name an instance (web@8080.toml, an empty file or a "
    "symlink to the template) or list them in its [template] instances"
)


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
        raise file_error(folder, f"cannot read: {strerror(exc)}") from None
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
        sources, errors = _read_sources([self.base, *self.dropins], memo)
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
        data, image, image_errors = _with_image(merged)
        errors.extend(image_errors)
        try:
            unit = UnitFile.model_validate(data)
        except ValidationError as exc:
            invalid = from_validation(self.base, exc, "", merged.error)
            if image_errors:
                # The image would have given the command: no second error for the missing exec.
                invalid = [e for e in invalid if e.key not in ("service", "service.exec")]
            errors.extend(invalid)
            return None, in_line_order(errors)
        secrets = None
        if unit.credentials:
            try:
                secrets = credentials.digest(credentials.read_all(unit.credentials))
            except credentials.CredentialError as exc:
                errors.append(merged.error(tuple(exc.key.split(".")), exc.message))
        if errors:
            return None, errors
        template_path = self.base if self.instance is not None else None
        spec = UnitSpec(
            self.name,
            self.base,
            unit,
            image,
            template=template_path,
            dropins=self.dropins,
            credentials_digest=secrets,
        )
        return spec, []


def read_memoized(
    path: str, memo: dict[str, compose.Source | UnitFileError]
) -> compose.Source | UnitFileError:
    """One parsed file or why it does not parse, read once per directory load (`memo`)."""
    found = memo.get(path)
    if found is None:
        try:
            found = read_source(path)
        except UnitFileError as exc:
            found = exc
        memo[path] = found
    return found


def _read_sources(
    paths: list[str], memo: dict[str, compose.Source | UnitFileError]
) -> tuple[list[compose.Source], list[UnitError]]:
    """The parsed files, each read once per directory load (`memo`), and their errors."""
    errors: list[UnitError] = []
    sources: list[compose.Source] = []
    for path in paths:
        found = read_memoized(path, memo)
        if isinstance(found, UnitFileError):
            errors.extend(found.errors)
        else:
            sources.append(found)
    return sources, errors


def _with_image(merged: compose.Merged) -> tuple[dict[str, Any], Image | None, list[UnitError]]:
    """The merged unit with its image's config as defaults (after the drop-ins and specifiers,
    so a drop-in or an instance may name the image too), the image, and what went wrong."""
    value = image_value(merged.data)
    if value is None:
        return merged.data, None, []
    try:
        data, image = apply_image(merged.data, value)
    except ImageDefaultsError as exc:
        return merged.data, None, [merged.error(tuple(exc.key.split(".")), exc.message)]
    return data, image, []


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
    prefix, at, instance = name.partition("@")
    if listing is not None and not (at and instance):  # the common case: no stat at all
        if name + SUFFIX not in listing or name + compose.DROPIN_DIR_SUFFIX not in listing:
            return None  # no such file, or a file alone (a reload of 5000 comes here for each)
        dropins = _merged_dropins(directory, [name], listing)
        return (
            Composition(name, os.path.join(directory, name + SUFFIX), dropins) if dropins else None
        )
    path = os.path.join(directory, name + SUFFIX)
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
        raise file_error(
            path,
            f"an instance file (empty or a symlink) needs its template {os.path.basename(template)}"
            " as a regular file in the same directory",
        )
    if not stat.S_ISLNK(st.st_mode):
        return
    try:
        target = os.readlink(path)
    except OSError as exc:
        raise file_error(path, f"cannot read the symlink: {strerror(exc)}") from None
    folder = os.path.dirname(path)
    resolved = os.path.normpath(os.path.join(folder, target))
    if resolved != os.path.normpath(template):
        raise file_error(
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
