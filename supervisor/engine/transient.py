"""Transient units: made through the API (`sandboxctl run`, `POST /v1/units`), with no file in
units_dir.

Each is written by the daemon as `NAME.toml` in `<state_dir>/transient/` with a `NAME.json`
beside it (whether to remove it once its run is over, and the boot it was made in), and loaded
beside units_dir at every reload, so `reload` keeps it and a restarted daemon (even after
`kill -9`) re-adopts it like any unit. `state_dir` is on tmpfs (`/run`), so a reboot forgets
it; with a state_dir on a disk, a file from an earlier boot (another boot id) is removed when
it is found, so a reboot forgets it there too.

The unit is the same TOML a file holds, validated by the same parser: an API client gets the
same errors (`resources.memry_max: unknown key`), keyed by the key instead of a line.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.errors import InvalidUnit, SupervisorError
from supervisor.linux import safefs
from supervisor.unit import checks
from supervisor.unit.diagnostics import UnitError, UnitFileError
from supervisor.unit.loader import SUFFIX, UnitLoader, cross_unit_errors, parse_unit
from supervisor.unit.spec import UnitSpec
from supervisor.unit.tomlout import dumps

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
META = ".json"
NAME_PREFIX = "run-"


class TransientError(SupervisorError):
    """A transient unit cannot be made or removed as asked (the API answers 409)."""


@dataclass(frozen=True)
class Meta:
    remove: bool  # remove the unit once its run is over (`--rm`)
    boot_id: str


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:  # no procfs entry (a container without it): one boot, as far as we know
        return ""


def _problem(error: UnitError) -> str:
    return f"{error.key}: {error.message}" if error.key else error.message


class TransientUnits:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.meta: dict[str, Meta] = {}
        self._loader = UnitLoader(host_checks=False)  # its own cache: one per directory
        self._boot = boot_id()

    def path(self, name: str) -> Path:
        return self.dir / f"{name}{SUFFIX}"

    def names(self) -> set[str]:
        try:
            entries = os.listdir(self.dir)
        except OSError:
            return set()
        return {e.removesuffix(SUFFIX) for e in entries if e.endswith(SUFFIX)}

    def fresh_name(self, taken: set[str]) -> str:
        while True:
            name = NAME_PREFIX + secrets.token_hex(4)
            if name not in taken:
                return name

    def load(self) -> tuple[dict[str, UnitSpec], dict[str, list[UnitError]]]:
        """Every transient unit of this boot (others are removed), validated."""
        specs: dict[str, UnitSpec] = {}
        errors: dict[str, list[UnitError]] = {}
        meta: dict[str, Meta] = {}
        for name in sorted(self.names()):
            found = self._read_meta(name)
            if found is None or found.boot_id != self._boot:
                self.delete(name)  # from before a reboot, or half made
                continue
            meta[name] = found
            # Through the loader's cache: an unchanged file costs an lstat, not a parse.
            spec, problems, _text = self._loader.load_file(str(self.path(name)), name)
            if spec is not None:
                specs[name] = spec
            else:
                errors[name] = problems
        self.meta = meta
        # A unit deleted since (`--rm`, DELETE) leaves the cache with its file: a daemon that
        # runs many short jobs must not keep every spec it ever loaded.
        self._loader.retain({str(self.path(name)) for name in meta})
        return specs, errors

    def _read_meta(self, name: str) -> Meta | None:
        try:
            data = json.loads((self.dir / f"{name}{META}").read_text())
            return Meta(remove=bool(data["remove"]), boot_id=str(data["boot_id"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def create(self, name: str, unit: Mapping[str, Any], remove: bool) -> None:
        """Validate `unit` (a unit file's tables, as JSON) and write it; raises InvalidUnit,
        TransientError (the state dir refused the write)."""
        self.prepare(name, unit, remove)()

    def prepare(self, name: str, unit: Mapping[str, Any], remove: bool) -> Callable[[], None]:
        """Validate `unit` now (InvalidUnit) and return the write, which the daemon runs on
        the state writer thread: a stalled state dir must not hold the loop."""
        bad = [k for k, v in unit.items() if not isinstance(v, dict)]
        if bad:
            raise InvalidUnit([f"{k}: must be a table ([{k}])" for k in sorted(bad)])
        try:
            text = dumps(dict(unit))
        except TypeError as exc:
            raise InvalidUnit([str(exc)]) from None
        path = self.path(name)
        try:
            spec = parse_unit(str(path), name, text.encode())
        except UnitFileError as exc:
            raise InvalidUnit([_problem(e) for e in exc.errors]) from None
        # Transient units load without host checks (they were checked here), so this is where
        # a pressure limit the host cannot watch is refused, as a unit file's is at load.
        if refused := checks.pressure_unsupported(spec):
            raise InvalidUnit([_problem(e) for e in refused])
        meta = {"remove": remove, "boot_id": self._boot}

        def write() -> None:
            try:
                with safefs.directory(self.dir, mkdir_mode=0o700) as fd:
                    # The metadata first: a unit file without it is a half-made one, removed
                    # at load.
                    safefs.write_atomic(fd, f"{name}{META}", json.dumps(meta).encode())
                    safefs.write_atomic(fd, f"{name}{SUFFIX}", text.encode())
            except OSError as exc:
                for suffix in (SUFFIX, META):
                    with contextlib.suppress(OSError):
                        (self.dir / f"{name}{suffix}").unlink()
                reason = (exc.strerror or str(exc)).lower()
                raise TransientError(f"cannot write {name} in {self.dir}: {reason}") from None

        return write

    def delete(self, name: str) -> None:
        for suffix in (SUFFIX, META):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / f"{name}{suffix}").unlink()
        self.meta.pop(name, None)

    def removes_on_exit(self, name: str) -> bool:
        meta = self.meta.get(name)
        return meta is not None and meta.remove


def merge(
    file_specs: Mapping[str, UnitSpec],
    file_errors: Mapping[str, Sequence[object]],
    specs: dict[str, UnitSpec],
    errors: Mapping[str, Sequence[object]],
) -> tuple[dict[str, UnitSpec], dict[str, Sequence[object]], list[str]]:
    """The unit files' units and the transient ones (`specs`, `errors`), and the names of the
    files ignored because a transient unit has their name: the API refused the name while the
    file existed, so the file came later, and waits until that unit is gone."""
    transient = specs.keys() | errors.keys()
    if not transient:  # the usual reload: two copies, not filtered walks of 5000 units
        return dict(file_specs), dict(file_errors), []
    shadowed = sorted(transient & (file_specs.keys() | file_errors.keys()))
    all_specs = {n: s for n, s in file_specs.items() if n not in transient} | specs
    all_errors = {n: e for n, e in file_errors.items() if n not in transient} | dict(errors)
    # A transient unit may name file units in `after`/`requires`; the files' own checks ran
    # without it, and a file cannot name a transient unit (its loader knows none).
    if not specs:  # nothing new to check: the usual reload pays nothing for this
        return all_specs, all_errors, shadowed
    crossed = cross_unit_errors(all_specs, all_specs.keys() | all_errors.keys())
    for name in specs.keys() & crossed.keys():
        all_specs.pop(name)
        all_errors[name] = crossed[name]
    return all_specs, all_errors, shadowed
