"""The sandbox side of the engine's ports (engine/ports.py): launching and networking.
(The third port, exec probes, is prober.py.)

The launcher builds bridge networking (network.py) between the fork and the go byte:
prepare (validate, lease) → launch → attach (veth, eth0, route) → return. A network failure
aborts the launch (PID 1 exits without exec) and is a LaunchError with stage
"network". `SandboxNetwork` is also what the runners call after a run (detach), on removal
(release) and the reconciler at start-up (orphans). pyroute2 is imported on first use only:
~170 ms of start-up that a daemon without bridge units never pays.

Launches go through the daemon's fork server, handed in by the daemon: no module global.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.cgroups import UnitCgroup
from supervisor.config import DaemonConfig
from supervisor.errors import LaunchError, NetworkError
from supervisor.images.store import STORE_DIR
from supervisor.linux import helduserns, pidfd, resolvconf
from supervisor.log import get_logger
from supervisor.sandbox.host import imagefetch, ipam
from supervisor.sandbox.host.forkserver import ForkServer
from supervisor.sandbox.host.launch import (
    ExtraBind,
    Launched,
    LaunchRequest,
    launch,
    launch_async,
)
from supervisor.unit.listen import needs_held_netns
from supervisor.unit.spec import UnitSpec

if TYPE_CHECKING:
    from supervisor.sandbox.host.network import NetworkManager, NetworkPlan

log = get_logger()
_Leased = tuple[tuple[int, int, int, int], dict[str, ipaddress.IPv4Address]]
_Leased6 = tuple[tuple[int, int, int, int], dict[str, ipaddress.IPv6Address]]


class SandboxNetwork:
    """sandbox/host/network.py's NetworkManager for the engine: built on first bridge-mode use,
    its errors as LaunchError (launch) or a logged error (teardown, which must not stop a
    runner from settling)."""

    def __init__(self, config: DaemonConfig) -> None:
        self._config = config
        self._manager: NetworkManager | None = None
        # Where NetworkManager keeps its leases: without that file no bridge unit ever ran,
        # so there is no veth or lease to clean up and no reason to load pyroute2.
        self._leases = config.data_dir / "network" / "leases.json"
        self._leased_cache: _Leased | None = None
        self._leases6 = config.data_dir / "network" / "leases6.json"
        self._leased6_cache: _Leased6 | None = None
        self._dns_warned: str | None = None  # the last "no nameserver" warning logged

    def resolv_conf(self, spec: UnitSpec) -> bytes | None:
        """The /etc/resolv.conf of a bridge unit with a host root or an image (None: nothing
        to write; a root directory keeps its own).
        A host without a nameserver a sandbox can reach is logged once, not per launch."""
        network = spec.unit.network
        sandbox = spec.unit.sandbox
        if network.mode != "bridge" or (sandbox.root != "host" and sandbox.image is None):
            return None
        resolv = resolvconf.for_sandbox(network.dns, network.dns_search)
        if resolv.warning is not None and resolv.warning != self._dns_warned:
            log.warning("unit.network_no_dns", unit=spec.name, warning=resolv.warning)
        self._dns_warned = resolv.warning
        return resolv.content

    def manager(self) -> NetworkManager:
        if self._manager is None:
            from supervisor.sandbox.host.network import NetworkManager  # noqa: PLC0415  (~170 ms)

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

    async def attach(self, plan: NetworkPlan, pid: int, held: bool = False) -> None:
        try:
            await self.manager().attach(plan, pid, held=held)
        except NetworkError as exc:
            raise LaunchError(plan.unit, "network", str(exc)) from None

    async def detach(self, spec: UnitSpec) -> None:
        unit = spec.unit
        if unit.network.mode != "bridge" or needs_held_netns(unit.listen, unit.network.mode):
            return  # a held netns keeps its veth, rules and published ports between runs
        await self.drop(spec.name)

    async def drop(self, unit: str) -> None:
        if self._manager is None and not self._leases.exists():
            return  # bridge mode was never used: nothing of it to remove
        try:
            await self.manager().detach(unit)
        except NetworkError as exc:
            log.error("unit.network_detach_failed", unit=unit, error=str(exc))

    def release(self, unit: str) -> None:
        if not self._leases.exists():
            return
        try:
            if self.manager().release(unit):
                log.info("unit.network_released", unit=unit)
        except NetworkError as exc:
            log.error("unit.network_release_failed", unit=unit, error=str(exc))

    def view(self, spec: UnitSpec) -> dict[str, str | bool | list[str] | None]:
        mode = spec.unit.network.mode
        if mode != "bridge":
            return {"mode": mode}
        ip = self._leased().get(spec.name)
        subnet = ipaddress.IPv4Network(self._config.network.subnet)
        view = {
            "mode": mode,
            "address": f"{ip}/{subnet.prefixlen}" if ip else None,
            "mac": ipam.mac_for(ip) if ip else None,
            "bridge": self._config.network.bridge,
            "gateway": str(ipam.gateway_of(subnet)),
            "outbound": spec.unit.network.nat_outbound,
            "ports": [str(p) for p in spec.unit.network.ports],
        }
        if self._config.network.subnet6 is not None:  # the IPv6 keys only where there is IPv6
            subnet6 = ipaddress.IPv6Network(self._config.network.subnet6)
            ip6 = self._leased6().get(spec.name)
            view["address6"] = f"{ip6}/{subnet6.prefixlen}" if ip6 else None
            view["gateway6"] = str(ipam.gateway6_of(subnet6))
        return view

    def _leased6(self) -> dict[str, ipaddress.IPv6Address]:
        """The IPv6 lease table (the config has a subnet6), cached as `_leased`'s."""
        subnet6 = self._config.network.subnet6
        try:
            st = os.stat(self._leases6)
        except OSError:
            return {}
        signature = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        if self._leased6_cache is None or self._leased6_cache[0] != signature:
            store = ipam.Lease6Store(self._leases6, ipaddress.IPv6Network(str(subnet6)))
            try:
                self._leased6_cache = (signature, store.leases())
            except NetworkError:
                return {}  # a corrupt file: the next launch reports it
        return self._leased6_cache[1]

    def _leased(self) -> dict[str, ipaddress.IPv4Address]:
        """The lease table, read again only when the file changed (one stat per call): the
        status of 1000 units must not read and parse it 1000 times. Every write replaces the
        file (a new inode), so the signature moves with it."""
        try:
            st = os.stat(self._leases)
        except OSError:
            return {}
        signature = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        if self._leased_cache is None or self._leased_cache[0] != signature:
            store = ipam.LeaseStore(
                self._leases, ipaddress.IPv4Network(self._config.network.subnet)
            )
            try:
                self._leased_cache = (signature, store.leases())
            except NetworkError:
                return {}  # a corrupt file: the next launch reports it
        return self._leased_cache[1]

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


class SandboxLauncher:
    """The real launcher (launch.py) through `server`, with bridge networking. `trace`: time
    every launch's stages (LaunchRequest.trace; the daemon's restart trace)."""

    def __init__(
        self,
        data_dir: Path,
        network: SandboxNetwork,
        server: ForkServer | None,
        userns_dir: Path | None = None,
        *,
        trace: bool = False,
        etc_dir: Path | None = None,
    ) -> None:
        self.data_dir, self.network, self.server = data_dir, network, server
        # Where each range's user namespace is held across launches (linux/helduserns.py).
        self.userns_dir = userns_dir
        self.trace = trace
        # Where the shared read-only /etc snapshots are kept (etcsnap.py).
        self.etc_dir = None if etc_dir is None else str(etc_dir)

    async def __call__(
        self,
        spec: UnitSpec,
        cgroup: UnitCgroup,
        output_fd: int,
        keep_fds: Sequence[int],
        *,
        extra_env: Mapping[str, str] | None = None,
        extra_binds: Sequence[tuple[str, str, bool]] = (),  # (source, target, read-only)
        listen_fds: Sequence[tuple[int, str]] = (),
        netns: str | None = None,
        stderr_fd: int | None = None,
        userns: tuple[int, int] | None = None,
    ) -> AwaitedStart:
        sandbox = spec.unit.sandbox
        layers: tuple[str, ...] = ()
        if sandbox.image is not None:  # before the network: nothing to undo if it fails
            layers = await imagefetch.ensure_layers(str(self.data_dir / STORE_DIR), spec)
        plan = await self.network.prepare(spec)
        # An image unit that may write keeps its writes in its own upper layer, as overlay.
        persistent = sandbox.overlay if sandbox.image is None else not sandbox.read_only
        overlay = str(self.data_dir / "overlay" / spec.name) if persistent else None
        request = LaunchRequest(
            spec, cgroup.procs_files(), output_fd,
            output_fd if stderr_fd is None else stderr_fd, overlay_dir=overlay,
            image_layers=layers,
            extra_env=dict(extra_env or {}), extra_binds=[ExtraBind(*b) for b in extra_binds],
            keep_fds=list(keep_fds), resolv_conf=self.network.resolv_conf(spec),
            listen_fds=tuple(listen_fds), netns=netns,
            id_map=None if userns is None else (0, *userns),
            userns_file=self._userns_file(userns), trace=self.trace, etc_dir=self.etc_dir,
        )  # fmt: skip
        if self.server is None:
            started = launch(request)
        else:
            started = await launch_async(request, self.server)
        if plan is not None:
            try:
                # attach removes its own veth; in a held netns it builds it once
                await self.network.attach(plan, started.pid, held=netns is not None)
            except BaseException:
                started.abort()  # PID 1 sees EOF instead of go and exits
                # After abort() reaped its launcher PID 1 is our child (we are its subreaper).
                pidfd.kill_and_reap(started.pid)
                raise
        return AwaitedStart(started)

    def _userns_file(self, userns: tuple[int, int] | None) -> str | None:
        if userns is None or self.userns_dir is None:
            return None
        return helduserns.path_for(str(self.userns_dir), *userns)


class AwaitedStart:
    """A launched sandbox for the engine (ports.Started): its `go` is awaited on the loop."""

    def __init__(self, launched: Launched) -> None:
        self.launched = launched

    @property
    def pid(self) -> int:
        return self.launched.pid

    @property
    def trace(self) -> list[tuple[str, int]]:
        return self.launched.trace

    async def go(self) -> None:
        await self.launched.go_async(asyncio.get_running_loop())

    def abort(self) -> None:
        self.launched.abort()
