"""`sandboxctl validate [PATH...]`: check unit files offline, exactly as the daemon would load them.

Problems go to stderr, one `FILE[:LINE[:COL]]: KEY: message` line each (warnings read
`...: KEY: warning: message` and never fail the check); the summary goes to stdout, so
`sandboxctl validate >/dev/null` shows only the problems. With --json, the whole report
(problems included) is one object on stdout.

A directory is checked as the daemon loads it, cross-unit checks included (`after` must name a
unit file, no dependency cycles). Files named one by one may be headed for another directory,
so an `after` naming a unit that is neither among them nor beside them is only a warning.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor.cli import verbs
from supervisor.errors import EXIT_FAILURE, EXIT_OK

if TYPE_CHECKING:
    from supervisor.config import DaemonConfig
    from supervisor.unit.loader import UnitError
    from supervisor.unit.spec import UnitSpec

HELP = verbs.HELP["validate"]
EPILOG = """\
PATH is a unit file or a directory of them (*.toml); default: the configured units_dir.
Each problem is one line on stderr, FILE[:LINE[:COL]]: KEY: message; host checks (a missing
binary or root directory on this machine) are warnings and do not fail the check, except a
published port a process of this host already listens on. An image's
layer blobs are read in full and their digests checked (not with --no-host-checks).

exit status: 0 all valid; 1 any unit invalid; 2 usage

EXAMPLE:
  sandboxctl validate                          # /etc/sandboxd/units (units_dir)
  sandboxctl validate units/ new-service.toml
  sandboxctl validate --no-host-checks build/units/   # for another host
  sandboxctl validate --json units/ | jq -r '.errors[] | "\\(.path): \\(.message)"'
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "validate",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="unit files or directories")
    p.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="daemon config to read units_dir, userns_pool and the subordinate id files from"
        " (default: /etc/sandboxd/sandboxd.toml)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print the report as one object on stdout, problems included: {"valid", "invalid",'
        ' "unreadable", "summary", "errors": [{"path", "line", "key", "message"}], "warnings"}',
    )
    p.add_argument(
        "--no-host-checks",
        dest="host_checks",
        action="store_false",
        help="skip the warnings about this host (missing binaries, root directories)",
    )
    p.set_defaults(run=run)


@dataclass
class Report:
    # The daemon config the units are checked against (user-namespace pool, subordinate ids).
    config: DaemonConfig | None = None
    valid: int = 0
    invalid: int = 0
    unreadable: int = 0  # directories that could not be listed
    errors: list[UnitError] = field(default_factory=list)
    warnings: list[UnitError] = field(default_factory=list)


def _check_directory(path: Path, host_checks: bool, report: Report) -> None:
    from supervisor.unit.loader import UnitFileError, UnitLoader  # noqa: PLC0415 (see run)

    try:
        load = UnitLoader(host_checks=host_checks).load_directory(path)
    except UnitFileError as exc:
        report.unreadable += 1
        report.errors.extend(exc.errors)
        return
    refused = _check_id_ranges(load.specs, report)
    report.valid += len(load.specs) - refused
    report.invalid += len(load.errors) + refused
    for errors in load.errors.values():
        report.errors.extend(errors)
    # A template's own section (its instances list) belongs to no instance: counted apart.
    report.invalid += len(load.template_errors)
    for errors in load.template_errors.values():
        report.errors.extend(errors)
    for warnings in load.warnings.values():
        report.warnings.extend(warnings)
    if host_checks:
        _verify_images(load.specs.values(), report)


def _check_id_ranges(specs: Mapping[str, UnitSpec], report: Report) -> int:
    """User-namespace ranges as the daemon would assign them with nothing picked yet:
    explicit ranges overlapping each other or a host user's subordinate ids, and more units
    to pick for than the pool has blocks. Returns how many units that refused."""
    from supervisor.unit import userns  # noqa: PLC0415 (see run)
    from supervisor.unit.loader import located  # noqa: PLC0415

    if report.config is None or not any(userns.wanted(s) for s in specs.values()):
        return 0
    found = userns.assign(specs, report.config.pool, report.config.subids())
    for name, errors in sorted(found.errors.items()):
        report.errors.extend(located(errors, _source(specs[name].path)))
    return len(found.errors)


def _verify_images(specs: Iterable[UnitSpec], report: Report) -> None:
    """Read every layer blob of each image unit and check its digests. The daemon does not
    (it would stall its loop on large images): it verifies a layer when it unpacks it."""
    from supervisor.images.oci import ImageError, verify  # noqa: PLC0415 (see run)
    from supervisor.unit.loader import UnitError, located  # noqa: PLC0415

    for spec in specs:
        if spec.image is None:
            continue
        try:
            verify(spec.image)
        except ImageError as exc:
            report.valid -= 1
            report.invalid += 1
            error = UnitError(spec.path, "sandbox.image", str(exc))
            report.errors.extend(located([error], _source(spec.path)))


def _check_files(paths: list[Path], host_checks: bool, report: Report) -> None:
    from supervisor.unit import checks  # noqa: PLC0415 (see run)
    from supervisor.unit.loader import (  # noqa: PLC0415
        SUFFIX,
        UnitError,
        UnitFileError,
        load_unit,
        located,
    )

    specs: dict[str, UnitSpec] = {}
    for path in paths:
        if path.name.endswith("@" + SUFFIX):  # a template: checked through its instances
            _check_template(path, specs, report)
            continue
        try:
            spec = load_unit(path)
        except UnitFileError as exc:
            report.invalid += 1
            report.errors.extend(exc.errors)
            continue
        specs[spec.name] = spec
    refused: set[str] = set()
    host = [(n, checks.host_errors(s)) for n, s in specs.items()] if host_checks else []
    for name, errors in [*checks.cycles(specs), *checks.port_conflicts(specs), *host]:
        if errors:
            refused.add(name)
            report.errors.extend(located(errors, _source(specs[name].path)))
    crossed = {n: s for n, s in specs.items() if n not in refused}
    refused_ids = _check_id_ranges(crossed, report)
    report.invalid += len(refused) + refused_ids
    report.valid += len(specs) - len(refused) - refused_ids
    beside = {p.name.removesuffix(SUFFIX) for path in paths for p in path.parent.glob("*" + SUFFIX)}
    warnings: dict[str, list[UnitError]] = {}
    for name, errors in checks.unknown_after(specs, set(specs) | beside):
        warnings.setdefault(name, []).extend(
            UnitError(e.path, e.key, f"warning: {e.message} among or beside the files checked")
            for e in errors
        )
    if host_checks:
        for name, spec in specs.items():
            warnings.setdefault(name, []).extend(checks.host_warnings(spec))
        _verify_images([s for n, s in specs.items() if n not in refused], report)
    for name, found in warnings.items():
        report.warnings.extend(located(found, _source(specs[name].path)))


def _check_template(path: Path, specs: dict[str, UnitSpec], report: Report) -> None:
    from supervisor.unit.diagnostics import UnitError  # noqa: PLC0415 (see run)
    from supervisor.unit.instances import load_template  # noqa: PLC0415

    found, errors = load_template(path)
    specs.update((spec.name, spec) for spec in found)
    if errors:
        report.invalid += 1
        report.errors.extend(errors)
    elif not found:
        report.warnings.append(
            UnitError(str(path), "template", "warning: no instance to check it with (an empty "
                      "or linked NAME@INSTANCE.toml beside it, or [template] instances)")
        )  # fmt: skip


def _source(path: str) -> str:
    """A unit's text, to give its warnings line numbers ("" if it is gone since: no lines)."""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def summary(report: Report) -> str:
    text = f"{_plural(report.valid, 'unit')} valid"
    if report.invalid:
        text += f", {report.invalid} invalid"
    if report.unreadable:
        n = report.unreadable
        text += f", {n} {'directory' if n == 1 else 'directories'} unreadable"
    if report.warnings:
        text += f" ({_plural(len(report.warnings), 'warning')})"
    return text


_WARNING = "warning: "


def _problem(error: UnitError) -> dict[str, Any]:
    # A warning's list says it is one: its message drops the prefix the text line needs.
    message = error.message.removeprefix(_WARNING)
    return {"path": error.path, "line": error.line, "key": error.key, "message": message}


def as_json(report: Report) -> dict[str, Any]:
    return {
        "valid": report.valid,
        "invalid": report.invalid,
        "unreadable": report.unreadable,
        "summary": summary(report),
        "errors": [_problem(e) for e in report.errors],
        "warnings": [_problem(w) for w in report.warnings],
    }


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: pydantic takes ~200 ms to import, and `sandboxctl status`
    # (which imports every verb module to build its parser) should not pay for it.
    from supervisor.config import load_config  # noqa: PLC0415

    config = load_config(args.config)
    report = Report(config=config)
    paths: list[Path] = args.paths
    if not paths:  # the configured units_dir is a directory even when it does not exist
        _check_directory(config.units_dir, args.host_checks, report)
    files = [p for p in paths if not p.is_dir()]
    for path in paths:
        if path.is_dir():
            _check_directory(path, args.host_checks, report)
    if files:
        _check_files(files, args.host_checks, report)
    if args.json:
        print(json.dumps(as_json(report)))
    else:
        for problem in [*report.errors, *report.warnings]:
            print(problem, file=sys.stderr)
        sys.stderr.flush()
        print(summary(report))
    return EXIT_FAILURE if report.invalid or report.unreadable else EXIT_OK
