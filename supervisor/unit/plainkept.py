"""The plain unit files a watched directory load takes as they were, without a look at each.

A reload of 5000 units with one edit went through all 5000 names one by one (the composition
check, the cache lookup, the result's three dicts): ~60 % of the loader's time (issue 23). The
daemon's loader already trusts its inotify watch (linux/dirwatch.py) to say which files may
have changed; this keeps, from one load to the next, the outcome (spec or errors, and text) of
every *plain* unit file the watch follows, so the next load copies them in one go and looks
only at the names the watch reported, the entries the listing shows that are new, and the
templates, instances and composed units, which are never kept (their outcome depends on more
than one file, some of them in drop-in directories the directory's watch does not see into).

Plain: a file `NAME.toml` alone, NAME a valid unit name without `@`, no `NAME.toml.d` entry
beside it (not even an empty directory, which a drop-in added later would fill unseen), its
cache entry confirmed while its file was followed (the loader's `_watched`: never an image or
credentials unit, which are read again at every load). A reported name drops its unit; so
does a `NAME.toml.d` that appears, and a file gone from the listing. Whenever the watch cannot
say what changed (the first load, lost events, another directory, no watch), nothing is kept.
"""

from __future__ import annotations

from collections.abc import Iterable

from supervisor.unit.compose import DROPIN_DIR_SUFFIX
from supervisor.unit.diagnostics import UnitError
from supervisor.unit.files import SUFFIX
from supervisor.unit.spec import UnitSpec


def unit_of(entry: str) -> str:
    """The unit a directory entry belongs to: `NAME.toml` and `NAME.toml.d` are NAME's."""
    if entry.endswith(DROPIN_DIR_SUFFIX):
        return entry[: -len(DROPIN_DIR_SUFFIX)]
    return entry.removesuffix(SUFFIX)


class PlainKept:
    """The kept outcomes, by unit name, of one directory; `files` their file names."""

    def __init__(self) -> None:
        self.directory: str | None = None
        self.specs: dict[str, UnitSpec] = {}
        self.errors: dict[str, list[UnitError]] = {}
        self.texts: dict[str, str] = {}
        self.files: set[str] = set()

    def clear(self, directory: str | None = None) -> None:
        """Keep nothing (for `directory` from now on)."""
        self.directory = directory
        self.specs, self.errors, self.texts, self.files = {}, {}, {}, set()

    def put(self, name: str, spec: UnitSpec | None, errors: list[UnitError], text: str) -> None:
        if spec is not None:
            self.specs[name] = spec
            self.errors.pop(name, None)
        else:
            self.errors[name] = errors
            self.specs.pop(name, None)
        self.texts[name] = text
        self.files.add(name + SUFFIX)

    def drop(self, name: str) -> None:
        self.specs.pop(name, None)
        self.errors.pop(name, None)
        self.texts.pop(name, None)
        self.files.discard(name + SUFFIX)

    def forget(self, entries: Iterable[str]) -> None:
        """Drop the units of these directory entries (reported by the watch, new or gone)."""
        for entry in entries:
            self.drop(unit_of(entry))
