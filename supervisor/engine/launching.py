"""The engine's view of the launcher: a callable that starts a sandbox and hands back its PID 1.

Injected into the runners so the state machine is tested with a fake launcher and fake
cgroups, and so the engine depends on one small shape instead of the launcher's request type.

The real launcher also builds bridge networking (sandbox/network.py) between the fork and the
go byte: prepare (validate, lease) → launch → attach (veth, eth0, route) → return. A network
failure aborts the launch (PID 1 exits without building anything) and is a LaunchError with
stage "network", so the unit fails with `launch-error:network: …` like any launch error.
`SandboxNetwork` is also what the runners call after a run (detach), on removal (release) and
the reconciler at start-up (orphans). pyroute2 is imported on first use only: ~170 ms of
start-up that a daemon without bridge units never pays.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from supervisor.cgroups import UnitCgroup
from supervisor.config import DaemonConfig
from supervisor.errors import LaunchError, NetworkError
from supervisor.log import get_logger
from supervisor.unit.spec import UnitSpec

if TYPE_CHECKING:
    from supervisor.sandbox.network import NetworkManager, NetworkPlan

log = get_logger()


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
    ) -> Awaitable[Started]:
        """Fork the sandbox into `cgroup` with `output_fd` as its stdout and stderr, and
        `keep_fds` inherited by PID 1 under the same numbers; `extra_env` and `extra_binds`
        are what the daemon adds for this run (the notify socket). Raises LaunchError, and
        leaves nothing of the sandbox behind when it does."""
        ...


class Networking(Protocol):
    """What runners and the reconciler ask of sandbox networking beyond the launch."""

    async def detach(self, spec: UnitSpec) -> None:
        """A run of `spec` has ended: remove what the launch attached."""
        ...

    def release(self, unit: str) -> None:
        """The unit is gone for good (its file was removed): free its address."""
        ...

    async def cleanup(self, running: Iterable[str], known: Iterable[str]) -> None:
        """Daemon start, after re-adoption: remove what no running unit owns."""
        ...


class SandboxNetwork:
    """sandbox/network.py's NetworkManager for the engine: built on first bridge-mode use,
    its errors as LaunchError (launch) or a logged error (teardown, which must not stop a
    runner from settling)."""

    def __init__(self, config: DaemonConfig) -> None:
        self._config = config
        self._manager: NetworkManager | None = None
        # Where NetworkManager keeps its leases: without that file no bridge unit ever ran,
        # so there is no veth or lease to clean up and no reason to load pyroute2.
        self._leases = config.data_dir / "network" / "leases.json"

    def manager(self) -> NetworkManager:
        if self._manager is None:
            from supervisor.sandbox.network import NetworkManager  # noqa: PLC0415  (~170 ms)

            self._manager = NetworkManager(self._config)
        return self._manager

    async def prepare(self, spec: UnitSpec) -> NetworkPlan | None:
        """Validate and lease before the launch; None for modes that need nothing here."""
        if spec.unit.network.mode != "bridge":
            return None
        try:
            return await self.manager().prepare(spec.name, spec.unit.network)
        except NetworkError as exc:
            raise LaunchError(spec.name, "network", str(exc)) from None

    async def attach(self, plan: NetworkPlan, pid: int) -> None:
        try:
            await self.manager().attach(plan, pid)
        except NetworkError as exc:
            raise LaunchError(plan.unit, "network", str(exc)) from None

    async def detach(self, spec: UnitSpec) -> None:
        if spec.unit.network.mode != "bridge":
            return
        try:
            await self.manager().detach(spec.name)
        except NetworkError as exc:
            log.error("unit.network_detach_failed", unit=spec.name, error=str(exc))

    def release(self, unit: str) -> None:
        if not self._leases.exists():
            return
        try:
            if self.manager().release(unit):
                log.info("unit.network_released", unit=unit)
        except NetworkError as exc:
            log.error("unit.network_release_failed", unit=unit, error=str(exc))

    async def cleanup(self, running: Iterable[str], known: Iterable[str]) -> None:
        if not self._leases.exists():
            return
        try:
            report = await self.manager().cleanup_orphans(running=running, known=known)
        except NetworkError as exc:
            log.error("daemon.network_cleanup_failed", error=str(exc))
            return
        if report.removed_veths or report.released_leases:
            log.info("daemon.network_cleaned", removed_veths=report.removed_veths,
                     released_leases=report.released_leases)  # fmt: skip


def sandbox_launcher(data_dir: Path, network: SandboxNetwork) -> Launcher:
    """The real launcher (supervisor.sandbox.launch) in the engine's shape."""
    from supervisor.sandbox.launch import (  # noqa: PLC0415  (load late)
        ExtraBind,
        LaunchRequest,
        launch,
    )

    async def start(
        spec: UnitSpec,
        cgroup: UnitCgroup,
        output_fd: int,
        keep_fds: Sequence[int],
        *,
        extra_env: Mapping[str, str] | None = None,
        extra_binds: Sequence[Bind] = (),
    ) -> Started:
        plan = await network.prepare(spec)
        overlay = str(data_dir / "overlay" / spec.name) if spec.unit.sandbox.overlay else None
        request = LaunchRequest(
            spec, cgroup.procs_files(), output_fd, output_fd, overlay_dir=overlay,
            extra_env=dict(extra_env or {}), extra_binds=[ExtraBind(*b) for b in extra_binds],
            keep_fds=list(keep_fds),
        )  # fmt: skip
        started = launch(request)
        if plan is not None:
            try:
                await network.attach(plan, started.pid)  # attach removes its own veth
            except BaseException:
                started.abort()  # PID 1 sees EOF instead of go and exits
                _reap(started.pid)
                raise
        return started

    return start


def _reap(pid: int) -> None:
    """Reap an aborted PID 1: after abort() reaped its launcher it is our child (we are its
    subreaper), so its PID cannot have been reused and kill -9 by PID is safe."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
