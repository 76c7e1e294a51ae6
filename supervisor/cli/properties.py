"""`sandboxctl run`'s unit, from `-p SECTION.KEY=VALUE` and the command: the tables a unit file
would hold, as JSON, for `POST /v1/units` (which validates them as a file is validated).

A VALUE is read as a TOML value when it is one (`-p service.autostart=false`, `-p
resources.pids_max=64`, `-p 'service.after=["db"]'`), else taken as a string (`-p
resources.memory_max=64M`, `-p sandbox.root=/srv/root`), so sizes, durations and paths need no
quotes. Deeper keys nest (`-p service.env.LANG=C`).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    from typing import Any

# Where a bare command name is looked for, inside the sandbox's root (not the caller's $PATH:
# the sandbox does not see the caller's filesystem).
SEARCH_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


class PropertyError(ValueError):
    """A bad `-p` or command; the message names it."""


def value(raw: str) -> Any:
    import tomllib  # noqa: PLC0415  (only with -p: ~3 ms of every `run`)

    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def unit_from(properties: list[str]) -> dict[str, Any]:
    unit: dict[str, Any] = {}
    for prop in properties:
        key, sep, raw = prop.partition("=")
        parts = key.split(".")
        if not sep or not key:
            raise PropertyError(f"-p {prop}: expected SECTION.KEY=VALUE")
        if len(parts) < 2 or not all(parts):
            raise PropertyError(f"-p {key}: a key is SECTION.KEY, e.g. resources.memory_max")
        table = unit
        for i, part in enumerate(parts[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise PropertyError(f"-p {key}: {'.'.join(parts[: i + 1])} is not a table")
        if parts[-1] in table:
            raise PropertyError(f"-p {key}: given twice")
        table[parts[-1]] = value(raw)
    return unit


def resolve(command: str, root: object) -> str:
    """An absolute path for `command` (as systemd-run does): a bare name is looked for in
    SEARCH_PATH inside the sandbox's root (the host's for `root = "host"`)."""
    if command.startswith("/") or "/" in command:
        if not command.startswith("/"):
            raise PropertyError(f"{command}: give a command name or an absolute path")
        return command
    base = "/" if root in (None, "host") else str(root)
    dirs = [os.path.join(base, d.lstrip("/")) for d in SEARCH_PATH]
    found = next((p for d in dirs if _executable(p := os.path.join(d, command))), None)
    if found is None:
        raise PropertyError(f"{command}: not found in {':'.join(SEARCH_PATH)} of the sandbox")
    return "/" + os.path.relpath(found, base) if base != "/" else found


def _executable(path: str) -> bool:
    """shutil.which's test of a candidate, without shutil (which imports fnmatch, re, enum,
    bz2 and lzma: ~9 ms of `sandboxctl run CMD`)."""
    return os.path.exists(path) and os.access(path, os.X_OK) and not os.path.isdir(path)


def build(properties: list[str], command: list[str]) -> dict[str, Any]:
    """The unit: `-p` keys, the command as `service.exec`, and `restart.policy = "no"` unless
    given (a command run once is not restarted, as with systemd-run and podman run)."""
    unit = unit_from(properties)
    service = unit.setdefault("service", {})
    sandbox = unit.get("sandbox", {})
    if not isinstance(service, dict) or not isinstance(sandbox, dict):
        raise PropertyError("-p service and sandbox are tables: give service.KEY=VALUE")
    if command:
        if "exec" in service:
            raise PropertyError("-p service.exec: give the command or service.exec, not both")
        image = sandbox.get("image") is not None
        service["exec"] = [command[0] if image else resolve(command[0], sandbox.get("root")),
                           *command[1:]]  # fmt: skip
    elif "exec" not in service and "image" not in sandbox:
        raise PropertyError("give a command (or -p service.exec, or -p sandbox.image)")
    restart = unit.setdefault("restart", {})
    if isinstance(restart, dict):
        restart.setdefault("policy", "no")
    return unit
