"""The error tree shared by the daemon, the launcher and the CLI.

Each error carries the facts a user needs to act (which unit, which file, which value) and
maps to one of the contract's CLI exit codes, so no layer needs a catch-all.
"""

from __future__ import annotations

import errno as errno_module
import os

# sandboxctl exit codes (docs/control.md, "sandboxctl"): scripts rely on them.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_NO_SUCH_UNIT = 4
EXIT_UNREACHABLE = 5


class SupervisorError(Exception):
    """Base of every error sandboxd raises on purpose."""

    exit_code = EXIT_FAILURE


class ConfigError(SupervisorError):
    """The daemon config file is unreadable or invalid."""

    def __init__(self, path: str, key: str, message: str) -> None:
        self.path, self.key, self.message = path, key, message
        super().__init__(f"{path}: {key}: {message}" if key else f"{path}: {message}")


class UnitNotFound(SupervisorError):
    exit_code = EXIT_NO_SUCH_UNIT

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no such unit: {name}")


class InvalidUnit(SupervisorError):
    """A unit given through the API (a transient unit) does not validate: `errors`, each
    `KEY: message`."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


class LaunchError(SupervisorError):
    """Starting a sandbox failed before the service's exec; `stage` says where."""

    def __init__(self, unit: str, stage: str, message: str, errno: int = 0) -> None:
        self.unit, self.stage, self.errno, self.message = unit, stage, errno, message
        super().__init__(f"{unit}: {stage}: {message}")

    @property
    def reason(self) -> str:
        """The exit reason as the contract spells it."""
        # Imported here: contract imports enum, which sandboxctl (importing this module for
        # its exit codes) does without (cli/names.py).
        from supervisor.contract import LAUNCH_ERROR  # noqa: PLC0415

        return f"{LAUNCH_ERROR}{self.stage}: {self.message}"


class CgroupError(SupervisorError):
    """A cgroup operation failed; the message names the cgroup or controller."""


class CgroupWriteError(CgroupError):
    def __init__(self, path: str, value: str, err: OSError) -> None:
        self.path, self.value, self.errno = path, value, err.errno or 0
        reason = os.strerror(err.errno) if err.errno else str(err)
        super().__init__(f"failed to write {value!r} to {path}: {reason}")


class MissingControllerError(CgroupError):
    def __init__(self, controller: str, where: str) -> None:
        self.controller = controller
        super().__init__(
            f"cgroup controller {controller!r} is not available in {where}; "
            "enable it on the host (v2: add it to the parent's cgroup.subtree_control, "
            "or run sandboxd with Delegate=yes)"
        )


class NetworkError(SupervisorError):
    """Building or tearing down a sandbox's network failed."""


class ImageStoreError(SupervisorError):
    """The layer store could not be read or pruned (the message names it and says why)."""


class ProbeStartError(SupervisorError):
    """An exec health probe could not be started in its sandbox (the message says why)."""


def errno_name(code: int) -> str:
    """`ENOENT` for 2; the number itself when unknown."""
    return errno_module.errorcode.get(code, str(code))
