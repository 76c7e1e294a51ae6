"""The engine's view of the launcher: a callable that starts a sandbox and hands back its PID 1.

Injected into the runners so the state machine is tested with a fake launcher and fake
cgroups, and so the engine depends on one small shape instead of the launcher's request type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from supervisor.cgroups import UnitCgroup
from supervisor.unit.spec import UnitSpec


class Started(Protocol):
    """A sandbox whose PID 1 exists and waits for the go byte."""

    @property
    def pid(self) -> int: ...

    def go(self) -> None:
        """Let PID 1 build its root and exec; raises LaunchError if it failed before exec."""
        ...


Bind = tuple[str, str, bool]  # (host source, target inside the sandbox, read-only)


class Launcher(Protocol):
    def __call__(
        self,
        spec: UnitSpec,
        cgroup: UnitCgroup,
        output_fd: int,
        keep_fds: Sequence[int],
        *,
        extra_env: Mapping[str, str] | None = None,
        extra_binds: Sequence[Bind] = (),
    ) -> Started:
        """Fork the sandbox into `cgroup` with `output_fd` as its stdout and stderr, and
        `keep_fds` inherited by PID 1 under the same numbers; `extra_env` and `extra_binds`
        are what the daemon adds for this run (the notify socket). Raises LaunchError."""
        ...


def sandbox_launcher(data_dir: Path) -> Launcher:
    """The real launcher (supervisor.sandbox.launch) in the engine's shape."""
    from supervisor.sandbox.launch import (  # noqa: PLC0415  (load late)
        ExtraBind,
        LaunchRequest,
        launch,
    )

    def start(
        spec: UnitSpec,
        cgroup: UnitCgroup,
        output_fd: int,
        keep_fds: Sequence[int],
        *,
        extra_env: Mapping[str, str] | None = None,
        extra_binds: Sequence[Bind] = (),
    ) -> Started:
        overlay = str(data_dir / "overlay" / spec.name) if spec.unit.sandbox.overlay else None
        request = LaunchRequest(
            spec, cgroup.procs_files(), output_fd, output_fd, overlay_dir=overlay,
            extra_env=dict(extra_env or {}), extra_binds=[ExtraBind(*b) for b in extra_binds],
            keep_fds=list(keep_fds),
        )  # fmt: skip
        return launch(request)

    return start
