"""The engine's ports: the small shapes through which it asks for sandboxes to be launched,
networked and probed, without knowing how (supervisor/sandbox/host/
does it: adapters.py, prober.py).

Injected through `Host` (engine/run.py), so the state machine is tested with a fake launcher
and fake cgroups, and the engine depends on a few methods instead of the launcher's request
types, the fork server's wire messages or the kernel calls behind them.

A launch that also builds bridge networking does it between the fork and the go byte; a
network failure is a LaunchError with stage "network", so the unit fails with
`launch-error:network: …` like any launch error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Protocol

from supervisor.cgroups import Subgroup, UnitCgroup
from supervisor.engine.model import NetworkView
from supervisor.unit.spec import UnitSpec


class Started(Protocol):
    """A sandbox whose PID 1 exists and waits for the go byte."""

    @property
    def pid(self) -> int: ...

    @property
    def trace(self) -> list[tuple[str, int]]:
        """A traced launch's (stage, CLOCK_MONOTONIC ns) from the launcher's side, complete
        once `go` returned; empty unless the launcher traces (restarttrace.py)."""
        ...

    async def go(self) -> None:
        """Let PID 1 build its root and exec; raises LaunchError if it failed before exec.
        Awaited, not blocked on: other launches and the API run while PID 1 builds its root."""
        ...

    def abort(self) -> None:
        """Never let PID 1 exec (it reads EOF instead of Go and exits) and release what the
        launch still holds of the launcher (its pipes; the launcher reaped). A no-op after
        `go` has returned or raised; the engine kills and reaps PID 1 itself."""
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
        listen_fds: Sequence[tuple[int, str]] = (),
        netns: str | None = None,
        stderr_fd: int | None = None,
        userns: tuple[int, int] | None = None,
    ) -> Awaitable[Started]:
        """Fork the sandbox into `cgroup` with `output_fd` as its stdout and stderr (or
        `stderr_fd` as its stderr, when the daemon keeps the streams apart for the journal), and
        `keep_fds` inherited by PID 1 under the same numbers; `extra_env` and `extra_binds`
        are what the daemon adds for this run (the notify socket); `listen_fds` (fd, name)
        become the service's fds 3.. with LISTEN_FDS/LISTEN_FDNAMES; `netns`, a held network
        namespace's file (engine/listeners.py), is joined instead of a new namespace (in
        bridge mode its veth is built once, at the first run that finds none); `userns` (host
        base, size) is the unit's id range when its sandbox has a user namespace. Raises
        LaunchError, and leaves nothing of the sandbox behind when it does."""
        ...


class Networking(Protocol):
    """What runners and the reconciler ask of sandbox networking beyond the launch."""

    async def detach(self, spec: UnitSpec) -> None:
        """A run of `spec` has ended: remove what the launch attached (not for a unit with a
        held network namespace, whose veth and rules outlive its runs: see `drop`)."""
        ...

    async def drop(self, unit: str) -> None:
        """The unit's held network namespace is let go: remove its veth and rules."""
        ...

    def release(self, unit: str) -> None:
        """The unit is gone for good (its file was removed): free its address."""
        ...

    async def cleanup(self, running: Iterable[str], known: Iterable[str]) -> None:
        """Daemon start, after re-adoption: remove what no running unit owns."""
        ...

    def view(self, spec: UnitSpec) -> NetworkView:
        """What `status` shows of the unit's network: `mode`, and for bridge mode the address
        leased to the unit (with the subnet's prefix; kept while it is stopped), its MAC, the
        bridge and the gateway (None before its first start). Cheap: called per unit of a
        list of 1000."""
        ...


class ProbeOutcome(Protocol):
    """How an exec probe's command ended, as the sandbox side saw it."""

    @property
    def status(self) -> int | None:
        """Its wait status; None if none was reported (the fork server died meanwhile)."""
        ...

    @property
    def timed_out(self) -> bool:
        """Killed, with its process tree, when its timeout ran out."""
        ...

    @property
    def output(self) -> str:
        """The start of what it wrote to stdout and stderr."""
        ...


class ProbeJob(Protocol):
    """One exec probe command running inside a sandbox."""

    async def reported(self, within: float) -> bool:
        """Wait until the sandbox side has said all it will; False if that took longer than
        `within` seconds (something is stuck)."""
        ...

    def finish(self) -> ProbeOutcome:
        """Stop waiting (synchronously), release what the job holds, and say what is known.
        Idempotent. The job's command must have been killed first (its sub-cgroup)."""
        ...


class ImageStore(Protocol):
    """The layer store of image units (images/store.py), whose slow work (walking and removing
    trees) runs outside the daemon's loop. Both raise ImageStoreError."""

    async def stored(self) -> dict[str, int]:
        """Every layer in the store: diff id -> bytes on disk."""
        ...

    async def prune(self, in_use: Iterable[str]) -> dict[str, int]:
        """Remove every layer not in `in_use`; what was removed, as `stored`."""
        ...


class Prober(Protocol):
    def start(
        self, unit: str, pid: int, argv: Sequence[str], cgroup: Subgroup, timeout: float
    ) -> ProbeJob:
        """Run `argv` inside the sandbox whose PID 1 is `pid` (entered as `sandboxctl exec`
        does), in `cgroup`, killed after `timeout` seconds. Raises ProbeStartError."""
        ...
