"""`sandboxctl logs` without the daemon: a unit's log files, read straight from the log directory.

Service output is on disk whether or not a daemon runs, and the daemon's own reader
(supervisor/logtail.py) does the reading here too, so the bytes, `-n` across the rotated files and
`-f` across rotation are the same as through the socket. The directory is `--log-dir`, else
`log_dir` of the daemon config (`--config`, default /etc/sandboxd/sandboxd.toml): the file
the daemon reads, so a moved log directory is found the way the daemon finds it.

Only files owned by the log directory's owner (the daemon's user) are read, as the daemon
reads only its own: a link planted there is as good as missing. Without the daemon there is
no list of units: a name with neither a log file nor a unit file in `units_dir` is unknown.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from supervisor.cli.client import error
from supervisor.errors import EXIT_FAILURE, EXIT_NO_SUCH_UNIT, EXIT_OK

Write = Callable[[bytes], None]


def read(
    unit: str,
    lines: int | None,
    follow: bool,
    write: Write,
    *,
    config: Path | None = None,
    log_dir: Path | None = None,
    why: str = "the daemon is unreachable",
) -> int:
    """Write what the daemon's `logs` would send for `unit` to `write`; the contract's exit code.
    First a one-line note on stderr: `why` the daemon is not used, and where the files are.

    Imports are local: pydantic (the config) and the reader cost ~200 ms, paid only here."""
    from supervisor.config import load_config  # noqa: PLC0415
    from supervisor.linux import safefs  # noqa: PLC0415
    from supervisor.logtail import read_log, rotated_path  # noqa: PLC0415
    from supervisor.unit.loader import SUFFIX  # noqa: PLC0415
    from supervisor.unit.schema import UNIT_NAME  # noqa: PLC0415

    settings = load_config(config, {"log_dir": log_dir})
    directory = settings.log_dir
    error(f"{why}; reading the log files in {directory} directly")
    if not UNIT_NAME.fullmatch(unit):
        error(f"no such unit: {unit} (not a unit name)")
        return EXIT_NO_SUCH_UNIT
    name = f"{unit}.log"
    try:
        with safefs.directory(directory) as dir_fd:
            owner = os.fstat(dir_fd).st_uid
            has_log = any(_exists(dir_fd, n) for n in (name, rotated_path(name, 1)))
    except FileNotFoundError:  # no daemon has written any output here yet
        owner, has_log = None, False
    except OSError as exc:
        return _unreadable(directory, exc)
    if not has_log and not (settings.units_dir / f"{unit}{SUFFIX}").exists():
        error(
            f"no such unit: {unit} (no {name} in {directory} and no {unit}{SUFFIX}"
            f" in {settings.units_dir})"
        )
        return EXIT_NO_SUCH_UNIT
    try:
        asyncio.run(_copy(read_log(str(directory / name), lines, follow, owner=owner), write))
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        return _unreadable(directory, exc)
    return EXIT_OK


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


async def _copy(chunks: AsyncIterator[bytes], write: Write) -> None:
    async for chunk in chunks:
        write(chunk)


def _unreadable(directory: Path, exc: OSError) -> int:
    if exc.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied (root or a member of the daemon's group may read them)"
    else:
        reason = (exc.strerror or str(exc)).lower()
    error(f"cannot read the logs in {directory}: {reason}")
    return EXIT_FAILURE
