"""`sandboxctl cat UNIT [--effective]`: the files that make a unit, and what they add up to.

Like `validate`, it reads the unit files itself, with the daemon's own loader, instead of
asking the daemon: the daemon keeps no source text (only the validated spec of what runs), the
answer must not depend on the daemon being up, and the files on disk are what the next
`reload` will apply. So after an edit not yet reloaded, `cat` shows the edit and `status`
shows what still runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor.cli import verbs
from supervisor.errors import EXIT_FAILURE, EXIT_NO_SUCH_UNIT, EXIT_OK

if TYPE_CHECKING:
    from supervisor.unit.loader import DirectoryLoad

HELP = verbs.HELP["cat"]
EPILOG = """\
Each file is printed after a `# PATH` comment line, in merge order: an instance's own file
(empty or a symlink), the template or unit file, then its drop-ins. --effective adds the
unit as it will run: specifiers expanded, drop-ins merged, every default filled in (keys
that are unset are comments). The files are read from units_dir, as the next reload reads
them; no daemon is needed.

exit status: 0; 1 the unit's files are invalid (the problems on stderr); 4 no such unit

EXAMPLE:
  sandboxctl cat web@8080                # web@8080.toml, web@.toml, web@.toml.d/*.toml
  sandboxctl cat web@8080 --effective    # ... then what will really run
  sandboxctl cat --effective web | grep memory_max
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "cat",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("unit", metavar="UNIT", help="the unit (an instance such as web@8080)")
    p.add_argument(
        "--effective",
        action="store_true",
        help="also print the merged unit with its defaults filled in",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="daemon config to read units_dir from (default: /etc/sandboxd/sandboxd.toml)",
    )
    p.add_argument(
        "--units-dir",
        type=Path,
        metavar="DIR",
        help="the unit directory (default: units_dir of the daemon config)",
    )
    p.set_defaults(run=run)


def _header(path: str) -> str:
    """`# PATH`, and what an instance's own file is, since its text says nothing."""
    try:
        if os.path.islink(path):
            return f"# {path} -> {os.readlink(path)} (an instance: the template follows)"
        if os.path.getsize(path) == 0 and "@" in os.path.basename(path):
            return f"# {path} (empty: an instance of the template that follows)"
    except OSError:
        pass
    return f"# {path}"


def _body(path: str) -> str:
    if os.path.islink(path):
        return ""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return f"# (cannot read: {(exc.strerror or str(exc)).lower()})\n"
    text = data.decode("utf-8", errors="replace")
    return text if not text or text.endswith("\n") else text + "\n"


def _sources(load: DirectoryLoad, directory: Path, name: str) -> list[str] | None:
    if name in load.sources:
        return load.sources[name]
    path = directory / f"{name}.toml"
    if name in load.specs or name in load.errors:
        return [str(path)]
    return None


def run(args: argparse.Namespace) -> int:
    # Imported here, as in validate: pydantic is slow to import and other verbs need none.
    from supervisor.cli import render  # noqa: PLC0415
    from supervisor.config import load_config  # noqa: PLC0415
    from supervisor.unit import tomlout  # noqa: PLC0415
    from supervisor.unit.loader import UnitFileError, UnitLoader  # noqa: PLC0415

    directory: Path = args.units_dir or load_config(args.config).units_dir
    name: str = args.unit
    try:
        load = UnitLoader(host_checks=False).load_directory(directory)
    except UnitFileError as exc:
        print(f"sandboxctl: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    sources = _sources(load, directory, name)
    if sources is None:
        hint = ""
        if name.endswith("@") or name.endswith("@.toml"):
            hint = " (a template is not a unit: name an instance, such as web@8080)"
        print(f"sandboxctl: no such unit: {name}{hint} in {directory}", file=sys.stderr)
        return EXIT_NO_SUCH_UNIT
    parts: list[str] = []
    for index, path in enumerate(sources):
        parts.append(("" if index == 0 else "\n") + _header(path) + "\n" + _body(path))
    spec = load.specs.get(name)
    if args.effective and spec is not None:
        parts.append(
            f"\n# effective: {name} as it will run (specifiers expanded, drop-ins merged, "
            "defaults filled in)\n" + tomlout.dumps(spec.unit.model_dump(mode="json"))
        )
    text = "".join(parts)
    if sys.stdout.isatty():  # a unit file's text is shown, never acted on by the terminal
        text = "\n".join(render.safe(line).replace("\\t", "\t") for line in text.split("\n"))
    sys.stdout.write(text)
    sys.stdout.flush()
    if spec is None:
        for error in load.errors.get(name, []):
            print(error, file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
