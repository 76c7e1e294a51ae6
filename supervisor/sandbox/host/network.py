"""Host-side networking of sandboxes, over netlink (pyroute2): bridge, veth pairs, addresses.

Modes (`[network].mode`): ``none`` (own netns with only `lo`, which PID 1 brings up) and
``host`` (the host's netns) need nothing from here. ``bridge``: a veth pair joins the sandbox's
netns to a host bridge (`network.bridge`, created on first use with the subnet's first
address); the sandbox end is `eth0` with the unit's leased address, default route via the bridge.
With the config's `subnet6` the same again for IPv6: the bridge's first IPv6 address, a second
lease (ipam.Lease6Store), the address and a default route on eth0.
Each such port may send only from its own MAC and address: nftables rules per port in the
bridge's own table (antispoof.py says what is enforced and why), installed at attach, removed
at detach, rebuilt for the surviving sandboxes after a daemon restart.

Lifecycle, as the engine calls it::

    plan = await net.prepare(unit, spec.unit.network)  # before launch: validate, lease, bridge
    launched = launch(...)                             # PID 1 waits in its new netns
    await net.attach(plan, launched.pid)               # veth, eth0, address, route
    launched.go()
    ...                                                # the sandbox exits
    await net.detach(unit)                             # host veth gone now, not when the
                                                       # kernel gets round to freeing the netns
    net.release(unit)                                  # only when the unit file is removed
    await net.cleanup_orphans(running, known)          # after a daemon restart

The daemon is one asyncio thread that forks sandboxes, so everything here is async on the
daemon's loop and starts no thread: pyroute2's `AsyncIPRoute` on sockets we open ourselves, and
for the rules one nft(8) run per change, awaited through a pidfd (linux/nftables.py).
For the sandbox side we enter its netns with setns(2) just long enough to open a netlink
socket (a socket stays bound to the netns it was created in), then switch back; no `await`
happens in between, so no other coroutine ever runs in the sandbox's netns.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from supervisor.config import DaemonConfig
from supervisor.errors import NetworkError
from supervisor.linux import faultpoint, nftables
from supervisor.linux.syscalls import CLONE_NEWNET, REAL, Syscalls
from supervisor.sandbox.host import antispoof
from supervisor.sandbox.host.antispoof import Port
from supervisor.sandbox.host.ipam import (
    Lease6Store,
    LeaseStore,
    check_static,
    check_static6,
    gateway6_of,
    gateway_of,
    mac_for,
)
from supervisor.sandbox.host.nat import UnitNat
from supervisor.sandbox.host.nattable import NatTable
from supervisor.unit.ports import PublishedPort
from supervisor.unit.schema import Network

SANDBOX_IFNAME = "eth0"
VETH_PREFIX = "sbx"
IFNAMSIZ = 15  # usable characters of a Linux interface name
IFF_UP = 0x1
IFA_F_NODAD = 0x02  # the leases make addresses unique: no duplicate address detection
ALIAS_PREFIX = "sandboxd:"  # IFLA_IFALIAS of host veths: `ip link` shows whose it is

Mode = Literal["none", "host", "bridge"]


def veth_name(bridge: str, unit: str) -> str:
    """The host end of a unit's veth pair: "sbx" + 12 hex digits, unique per (bridge, unit).

    Unit names are up to 63 characters but interface names only 15, hence a hash; the bridge
    is part of it so two daemons (a test one and the real one) never fight over a name.
    """
    digest = hashlib.sha256(f"{bridge}\0{unit}".encode()).hexdigest()
    return (VETH_PREFIX + digest)[:IFNAMSIZ]


@dataclass(frozen=True)
class NetworkPlan:
    """What `attach` will build for one launch; decided (and validated) by `prepare`."""

    unit: str
    mode: Mode
    bridge: str | None = None
    bridge_index: int | None = None  # as prepare() found it; saves a lookup per launch
    host_veth: str | None = None
    address: ipaddress.IPv4Interface | None = None
    gateway: ipaddress.IPv4Address | None = None
    address6: ipaddress.IPv6Interface | None = None  # with the daemon's subnet6 only
    gateway6: ipaddress.IPv6Address | None = None
    outbound: bool = False
    ports: tuple[PublishedPort, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """For state files and `status`: plain strings, null where a mode has no value."""
        return {
            "mode": self.mode,
            "bridge": self.bridge,
            "host_veth": self.host_veth,
            "address": str(self.address) if self.address else None,
            "gateway": str(self.gateway) if self.gateway else None,
            "address6": str(self.address6) if self.address6 else None,
            "gateway6": str(self.gateway6) if self.gateway6 else None,
        }


@dataclass
class CleanupReport:  # what cleanup_orphans removed, for the daemon's log
    removed_veths: list[str] = field(default_factory=list)
    released_leases: list[str] = field(default_factory=list)
    filtered_ports: list[str] = field(default_factory=list)  # the rules rebuilt for these
    nat_units: list[str] = field(default_factory=list)  # NAT rules rebuilt for these


def _netlink_error(action: str, exc: NetlinkError | OSError) -> NetworkError:
    code = exc.code if isinstance(exc, NetlinkError) else (exc.errno or 0)
    return NetworkError(f"{action}: {os.strerror(code) if code else exc}")


def _socket_in_netns(sys_: Syscalls, nsfd: int) -> socket.socket:
    """A NETLINK_ROUTE socket living in the netns `nsfd`, opened without fork or thread."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        sys_.setns(nsfd, CLONE_NEWNET)
        try:
            return socket.socket(
                socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
            )
        finally:
            try:
                sys_.setns(own, CLONE_NEWNET)
            except OSError:
                # Fail closed: a daemon stuck in a sandbox's netns would build every later
                # link inside that sandbox. Cannot happen in practice (we hold the fd).
                os.write(2, b"sandboxd: fatal: cannot return to the daemon's netns\n")
                os._exit(70)
    finally:
        os.close(own)


@contextlib.asynccontextmanager
async def _rtnl(sock: socket.socket | None = None) -> AsyncIterator[Any]:
    """An AsyncIPRoute on the running loop; on `sock` if given (it takes the fd over).

    groups=0: we only ask and never listen, so the kernel need not copy every link and
    address event on the host into our socket.
    """
    fileno = None if sock is None else sock.detach()
    ipr = AsyncIPRoute(groups=0, fileno=fileno)
    async with ipr:
        yield ipr


async def _dump(ipr: Any, kind: str, **spec: Any) -> list[Any]:
    """All messages of a dump request (AsyncIPRoute streams them as an async generator)."""
    return [msg async for msg in await getattr(ipr, kind)("dump", **spec)]


async def _get_link(ipr: Any, ifname: str) -> Any | None:
    """The link's RTM_NEWLINK message, looked up by name in the kernel; None if absent."""
    try:
        return (await ipr.link("get", ifname=ifname))[0]
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise
        return None


async def _delete_link(ipr: Any, ifname: str) -> bool:
    """Delete a link by name; False if there was none (a dying netns may have taken it)."""
    try:
        await ipr.link("del", ifname=ifname)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise
        return False
    return True


def _kind(link: Any) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return None if info is None else info.get_attr("IFLA_INFO_KIND")


class NetworkManager:
    """One daemon's sandbox networking: its bridge, subnet and lease file."""

    def __init__(self, config: DaemonConfig, syscalls: Syscalls = REAL) -> None:
        self.bridge = config.network.bridge
        self.subnet = ipaddress.IPv4Network(config.network.subnet)
        self.gateway = gateway_of(self.subnet)
        self.leases = LeaseStore(config.data_dir / "network" / "leases.json", self.subnet)
        # IPv6 beside IPv4 when the config has a subnet6: its own lease file, same rules.
        self.subnet6: ipaddress.IPv6Network | None = None
        self.gateway6: ipaddress.IPv6Address | None = None
        self.leases6: Lease6Store | None = None
        if config.network.subnet6 is not None:
            self.subnet6 = ipaddress.IPv6Network(config.network.subnet6)
            self.gateway6 = gateway6_of(self.subnet6)
            self.leases6 = Lease6Store(config.data_dir / "network" / "leases6.json", self.subnet6)
        # Outbound NAT and published ports (nat.py, nattable.py): a table of its own.
        self.nat = NatTable(self.bridge, str(self.subnet), config.data_dir / "network" / "nat")
        self._sys = syscalls
        # The bridge as last verified. Checked once, not per launch (two netlink round trips
        # of pure-Python decoding); forgotten when an attach fails, so a bridge deleted by
        # hand costs one failed launch and is rebuilt for the restart.
        self._bridge_index: int | None = None
        # The bridge's nftables table is known to be whole (built or checked by this daemon).
        # Until then, and after any nft batch failed (`nft flush ruleset` takes our table
        # too), an attach repairs the table with every live port instead of adding its own.
        self._filter_ok = False

    def veth_for(self, unit: str) -> str:
        return veth_name(self.bridge, unit)

    def port_for(
        self, unit: str, ip: ipaddress.IPv4Address, ip6: ipaddress.IPv6Address | None = None
    ) -> Port:
        """What the unit's port may send from: the MAC its eth0 gets (mac_for), `ip`, and
        `ip6` (with its link-local address) if it has one."""
        return Port(self.veth_for(unit), mac_for(ip), ip, ip6)

    def _leases6(self) -> dict[str, ipaddress.IPv6Address]:
        return self.leases6.leases() if self.leases6 is not None else {}

    # -- before launch ---------------------------------------------------------------------

    async def prepare(self, unit: str, network: Network) -> NetworkPlan:
        """Validate the unit's network and reserve what it needs, before anything is launched.

        NetworkError for an address outside the subnet or leased to another unit, a bridge name
        taken by another kind of link, a subnet used elsewhere on the host; no per-unit state
        is left then (a bridge created here stays: every bridge-mode sandbox shares it).
        """
        if network.mode != "bridge":
            return NetworkPlan(unit=unit, mode=network.mode)
        static = check_static(network.address, self.subnet) if network.address else None
        static6 = None
        if network.address6 is not None:
            if self.subnet6 is None:
                raise NetworkError(
                    f"address6 {network.address6} is set but the daemon has no IPv6 subnet; "
                    "set network.subnet6 in the daemon config"
                )
            static6 = check_static6(network.address6, self.subnet6)
        ports = tuple(network.ports)
        if conflict := self.nat.conflict(unit, ports):
            raise NetworkError(conflict)
        if self._bridge_index is None:
            self._bridge_index = await self.ensure_bridge()
        ip = self.leases.acquire(unit, static)
        address6 = None
        if self.leases6 is not None and self.subnet6 is not None:
            ip6 = self.leases6.acquire(unit, static6)
            address6 = ipaddress.IPv6Interface(f"{ip6}/{self.subnet6.prefixlen}")
        return NetworkPlan(
            unit=unit,
            mode="bridge",
            bridge=self.bridge,
            bridge_index=self._bridge_index,
            host_veth=self.veth_for(unit),
            address=ipaddress.IPv4Interface(f"{ip}/{self.subnet.prefixlen}"),
            gateway=self.gateway,
            address6=address6,
            gateway6=self.gateway6 if address6 is not None else None,
            outbound=network.nat_outbound,
            ports=ports,
        )

    async def ensure_bridge(self) -> int:
        """The bridge's index; created, addressed and up if it was not. Idempotent."""
        gateway = f"{self.gateway}/{self.subnet.prefixlen}"
        try:
            async with _rtnl() as ipr:
                link = await _get_link(ipr, self.bridge)
                if link is None:
                    await self._check_subnet_free(ipr)
                    with contextlib.suppress(NetlinkError):  # EEXIST: a concurrent prepare
                        await ipr.link(
                            "add",
                            ifname=self.bridge,
                            kind="bridge",
                            address=mac_for(self.gateway),
                        )
                    link = await _get_link(ipr, self.bridge)
                    if link is None:
                        raise NetworkError(f"bridge {self.bridge!r} vanished while being set up")
                kind = _kind(link)
                if kind != "bridge":
                    raise NetworkError(
                        f"link {self.bridge!r} exists and is a {kind or 'physical'} "
                        "device, not a bridge; set network.bridge in the daemon config "
                        "to a free name"
                    )
                index = int(link["index"])
                addrs = await _dump(ipr, "addr", index=index, family=socket.AF_INET)
                have = {f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in addrs}
                if gateway not in have:
                    with contextlib.suppress(NetlinkError):  # EEXIST: a concurrent prepare
                        await ipr.addr(
                            "add",
                            index=index,
                            address=str(self.gateway),
                            prefixlen=self.subnet.prefixlen,
                        )
                if self.subnet6 is not None and self.gateway6 is not None:
                    addrs6 = await _dump(ipr, "addr", index=index, family=socket.AF_INET6)
                    have6 = {str(a.get_attr("IFA_ADDRESS")) for a in addrs6}
                    if str(self.gateway6) not in have6:
                        with contextlib.suppress(NetlinkError):  # EEXIST: a concurrent prepare
                            await ipr.addr(
                                "add",
                                index=index,
                                family=socket.AF_INET6,
                                address=str(self.gateway6),
                                prefixlen=self.subnet6.prefixlen,
                                flags=IFA_F_NODAD,
                            )
                if not link["flags"] & IFF_UP:
                    await ipr.link("set", index=index, state="up")
                return index
        except (NetlinkError, OSError) as exc:
            raise _netlink_error(f"cannot set up bridge {self.bridge!r}", exc) from None

    async def _check_subnet_free(self, ipr: Any) -> None:
        """Refuse a subnet the host already uses elsewhere: two routes would fight for it."""
        for addr in await _dump(ipr, "addr", family=socket.AF_INET):
            net = ipaddress.IPv4Network(
                f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}", strict=False
            )
            if net.overlaps(self.subnet):
                name = addr.get_attr("IFA_LABEL") or f"index {addr['index']}"
                raise NetworkError(
                    f"subnet {self.subnet} overlaps {net} on host interface {name}; set "
                    "network.subnet in the daemon config to a free range"
                )
        if self.subnet6 is None:
            return
        for addr in await _dump(ipr, "addr", family=socket.AF_INET6):
            net6 = ipaddress.IPv6Network(
                f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}", strict=False
            )
            if net6.overlaps(self.subnet6):
                raise NetworkError(
                    f"subnet6 {self.subnet6} overlaps {net6} on host interface index "
                    f"{addr['index']}; set network.subnet6 in the daemon config to a free range"
                )

    # -- between launch and go -------------------------------------------------------------

    async def attach(self, plan: NetworkPlan, pid: int, held: bool = False) -> None:
        """Wire the sandbox whose PID 1 is `pid` (waiting for its go byte) to the bridge.

        `held`: PID 1 is in a network namespace the daemon holds across runs
        (linux/heldnetns.py); an eth0 already in it was built by an earlier run (its veth,
        rules and NAT are kept between runs), so only the rules are made sure of.

        On failure the host veth (and with it the sandbox end) is removed before
        NetworkError is raised; the engine then kills the half-started sandbox.
        """
        if plan.mode != "bridge":
            return
        assert plan.host_veth and plan.address and plan.gateway and plan.bridge
        try:
            nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NetworkError(f"cannot open the netns of pid {pid}: {exc.strerror}") from None
        try:
            # The same fd names the netns for the veth peer and for setns, so a recycled pid
            # cannot make us configure one namespace and create the link in another.
            if os.fstat(nsfd).st_ino == os.stat("/proc/self/ns/net").st_ino:
                raise NetworkError(
                    f"pid {pid} shares the daemon's netns; bridge mode needs its own"
                )
            if held and await self._reattach(plan, nsfd):
                return
            await self._attach(plan, nsfd)
        finally:
            os.close(nsfd)

    async def _reattach(self, plan: NetworkPlan, nsfd: int) -> bool:
        """In a held netns: True if its eth0 (with the plan's address) and the host veth are
        still there, their rules and NAT made sure of; False: build them (`_attach`)."""
        assert plan.host_veth and plan.address
        try:
            async with _rtnl() as ipr:
                host = await _get_link(ipr, plan.host_veth)
                if host is None or host.get_attr("IFLA_MASTER") != plan.bridge_index:
                    return False
                async with _rtnl(_socket_in_netns(self._sys, nsfd)) as inner:
                    eth0 = await _get_link(inner, SANDBOX_IFNAME)
                    if eth0 is None:
                        return False
                    # Both families: a daemon restarted with a subnet6 it lacked before (or
                    # a lease that moved) must not keep a sandbox on its old addresses.
                    addrs = await _dump(inner, "addr", index=eth0["index"])
                    have = {str(a.get_attr("IFA_ADDRESS")) for a in addrs}
                    wanted = {str(plan.address.ip)}
                    if plan.address6 is not None:
                        wanted.add(str(plan.address6.ip))
                    if not wanted <= have:
                        return False
                if not self._filter_ok:  # repaired with every live port (_filter)
                    await self._filter(ipr, self._port_of(plan))
            await self._publish(plan)
        except (NetlinkError, OSError) as exc:
            raise _netlink_error(f"cannot check {plan.host_veth} of the held netns", exc) from None
        return True

    async def _attach(self, plan: NetworkPlan, nsfd: int) -> None:
        assert plan.host_veth and plan.address and plan.gateway and plan.bridge
        step = f"cannot create veth {plan.host_veth}"
        try:
            async with _rtnl() as ipr:
                # Left over from the previous run if its netns is still being freed.
                await _delete_link(ipr, plan.host_veth)
                # The peer is born inside the sandbox's netns under its final name: no move,
                # no rename, and no moment where "eth0" exists on the host.
                await ipr.link(
                    "add",
                    ifname=plan.host_veth,
                    kind="veth",
                    peer={
                        "ifname": SANDBOX_IFNAME,
                        "net_ns_fd": nsfd,
                        "address": mac_for(plan.address.ip),
                    },
                )
                step = f"cannot attach {plan.host_veth} to bridge {plan.bridge}"
                try:
                    await ipr.link(
                        "set",
                        ifname=plan.host_veth,
                        master=plan.bridge_index,
                        state="up",
                        ifalias=ALIAS_PREFIX + plan.unit,
                    )
                except NetlinkError:
                    # The kernel says EINVAL or ENODEV for a master index that is gone.
                    if await _get_link(ipr, plan.bridge) is None:
                        raise NetworkError(
                            f"bridge {plan.bridge!r} is gone (removed by hand?)"
                        ) from None
                    raise
                faultpoint.reached(faultpoint.NETWORK_VETH_ATTACHED, plan.unit)
                step = f"cannot configure {SANDBOX_IFNAME} in the sandbox"
                async with _rtnl(_socket_in_netns(self._sys, nsfd)) as inner:
                    eth0 = (await inner.link("get", ifname=SANDBOX_IFNAME))[0]["index"]
                    await inner.addr(
                        "add",
                        index=eth0,
                        address=str(plan.address.ip),
                        prefixlen=plan.address.network.prefixlen,
                    )
                    if plan.address6 is not None and plan.gateway6 is not None:
                        await inner.addr(
                            "add",
                            index=eth0,
                            family=socket.AF_INET6,
                            address=str(plan.address6.ip),
                            prefixlen=plan.address6.network.prefixlen,
                            flags=IFA_F_NODAD,
                        )
                    await inner.link("set", index=eth0, state="up")
                    await inner.route("add", dst="0.0.0.0/0", gateway=str(plan.gateway))
                    if plan.address6 is not None and plan.gateway6 is not None:
                        await inner.route(
                            "add", dst="::/0", gateway=str(plan.gateway6), family=socket.AF_INET6
                        )
                # Last, and still before the go byte: no code of the sandbox's has run yet,
                # so nothing it sends ever passes unfiltered.
                step = f"cannot install the anti-spoofing rules of {plan.host_veth}"
                await self._filter(ipr, self._port_of(plan))
            # Also before the go byte: a service may bind its port and expect it published.
            await self._publish(plan)
        except BaseException as exc:
            self._bridge_index = None
            with contextlib.suppress(NetlinkError, OSError):
                async with _rtnl() as ipr:
                    await _delete_link(ipr, plan.host_veth)
            with contextlib.suppress(NetworkError):
                await self.nat.discard(plan.unit)
            if isinstance(exc, NetlinkError | OSError):
                raise _netlink_error(step, exc) from None
            raise

    # -- after the sandbox ended -----------------------------------------------------------

    async def detach(self, unit: str) -> bool:
        """Remove the unit's host veth if it is still there; True if it was.

        The kernel removes a veth pair with the last process of its netns, but it frees a
        netns asynchronously (cleanup_net), so the host end can linger for a moment; deleting
        it here makes a restart that follows at once find its name free. Its anti-spoofing
        rules go after it.
        """
        veth = self.veth_for(unit)
        gone = await self._delete(veth)
        await self._unfilter(veth)
        await self.nat.discard(unit)
        return gone

    def _port_of(self, plan: NetworkPlan) -> Port:
        assert plan.address is not None  # a bridge plan's
        ip6 = plan.address6.ip if plan.address6 is not None else None
        return self.port_for(plan.unit, plan.address.ip, ip6)

    async def _publish(self, plan: NetworkPlan) -> None:
        """The unit's NAT (outbound, published ports) as `plan` says, or none: a discard also
        drops the rules of an earlier version of the unit."""
        entry = self.nat_for(plan)
        if entry.needs_table():
            await self.nat.add(entry)
        else:
            await self.nat.discard(plan.unit)

    def nat_for(self, plan: NetworkPlan) -> UnitNat:
        """The unit's entry in the NAT table (its chain is named after its veth: no user text
        in an nft name)."""
        assert plan.address is not None
        return UnitNat(
            plan.unit, self.veth_for(plan.unit), plan.address.ip, plan.outbound, plan.ports
        )

    def release(self, unit: str) -> bool:
        """The unit was removed: free its address leases. True if it had one."""
        if self.leases6 is not None:
            self.leases6.release(unit)
        return self.leases.release(unit)

    async def cleanup_orphans(
        self, running: Iterable[str], known: Iterable[str] = ()
    ) -> CleanupReport:
        """After a daemon restart: drop what belongs to no sandbox any more.

        `running`: units whose sandboxes were re-adopted (their veths stay). `known`: units
        that still have a unit file (their leases stay, so they get the same address on their
        next start). Veths on our bridge that belong to no running unit are deleted; leases of
        units neither running nor known are released. The bridge's anti-spoofing table is
        rebuilt with exactly the surviving ports (a crashed daemon may have left rules of dead
        sandboxes; an operator's `nft flush ruleset` may have taken all). Links on other
        bridges and their tables are never touched.

        A running unit without a lease (the subnet changed under it) loses its veth too: we
        cannot know what it may send, and an unfiltered port could spoof.
        """
        running = set(running)
        leases, leases6 = self.leases.leases(), self._leases6()
        keep = {
            self.veth_for(u): self.port_for(u, leases[u], leases6.get(u))
            for u in running
            if u in leases
        }
        report = CleanupReport()
        ports: list[Port] | None = None  # None: there is no bridge
        try:
            async with _rtnl() as ipr:
                bridge = await _get_link(ipr, self.bridge)
                if bridge is not None:
                    ports = []
                    for name, _ in await self._sandbox_ports(ipr, bridge["index"]):
                        if name in keep:
                            ports.append(keep[name])
                        elif await _delete_link(ipr, name):
                            report.removed_veths.append(name)
        except (NetlinkError, OSError) as exc:
            raise _netlink_error(f"cannot list the ports of bridge {self.bridge}", exc) from None
        report.released_leases = self.leases.retain(running | set(known))
        if self.leases6 is not None:
            self.leases6.retain(running | set(known))
        # Rules of running units only, each once, from their files (nattable.py).
        report.nat_units = await self.nat.rebuild(
            [u for u in running if self.veth_for(u) in {p.ifname for p in ports or []}]
        )
        if ports is None:
            await self._nft(antispoof.drop_table(self.bridge), "cannot remove the rules")
        else:
            await self._nft(antispoof.rebuild(self.bridge, ports), "cannot rebuild the rules")
            self._filter_ok = True
            report.filtered_ports = sorted(p.ifname for p in ports)
        return report

    async def remove_bridge(self) -> bool:
        """Delete the bridge and its rules table, for tests and uninstall; never on daemon
        exit, which may leave sandboxes running (`on_exit = "leave"`)."""
        self._bridge_index = None
        self._filter_ok = False
        removed = await self._delete(self.bridge)
        await self._nft(antispoof.drop_table(self.bridge), "cannot remove the rules")
        await self.nat.drop()
        return removed

    # -- anti-spoofing rules (antispoof.py) ------------------------------------------------

    async def _filter(self, ipr: Any, port: Port) -> None:
        """Install `port`'s rules. The first time, and after a batch failed, repair the whole
        table with every live port of the bridge instead: sandboxes attached before the table
        was lost get their rules back, and the ones attaching now keep theirs (a repair
        adds, it never deletes a port's rules)."""
        if self._filter_ok:
            try:
                await nftables.run(antispoof.install(self.bridge, port))
                return
            except nftables.NftablesError:
                self._filter_ok = False  # the repair says what is wrong if it fails too
        ports = {p.ifname: p for p in await self._live_ports(ipr)}
        ports[port.ifname] = port
        await self._nft(antispoof.repair(self.bridge, ports.values()), "cannot install the rules")
        self._filter_ok = True

    async def _unfilter(self, veth: str) -> None:
        if not self._filter_ok:
            # The next attach repairs the table; until then a leftover chain matches no port.
            return
        await self._nft(antispoof.remove(self.bridge, veth), f"cannot remove the rules of {veth}")

    async def _nft(self, commands: list[antispoof.Command], what: str) -> None:
        try:
            await nftables.run(commands)
        except nftables.NftablesError as exc:
            self._filter_ok = False
            raise NetworkError(
                f"{what} of table bridge {antispoof.table_name(self.bridge)}: {exc}"
            ) from None

    async def _live_ports(self, ipr: Any) -> list[Port]:
        """The bridge's sandbox ports now, each with the address of its unit's lease (the
        host veth's alias names the unit); a port whose unit has no lease is left out."""
        bridge = await _get_link(ipr, self.bridge)
        if bridge is None:
            return []
        leases, leases6 = self.leases.leases(), self._leases6()
        return [
            self.port_for(unit, leases[unit], leases6.get(unit))
            for name, unit in await self._sandbox_ports(ipr, bridge["index"])
            if unit in leases and self.veth_for(unit) == name
        ]

    async def _sandbox_ports(self, ipr: Any, bridge_index: int) -> list[tuple[str, str]]:
        """(veth name, unit from its alias or "") of every sandbox veth on the bridge."""
        found = []
        for link in await _dump(ipr, "link", master=bridge_index):
            name = str(link.get_attr("IFLA_IFNAME"))
            if _kind(link) == "veth" and name.startswith(VETH_PREFIX):
                alias = str(link.get_attr("IFLA_IFALIAS") or "")
                found.append((name, alias.removeprefix(ALIAS_PREFIX)))
        return found

    async def _delete(self, ifname: str) -> bool:
        try:
            async with _rtnl() as ipr:
                return await _delete_link(ipr, ifname)
        except (NetlinkError, OSError) as exc:
            raise _netlink_error(f"cannot remove link {ifname}", exc) from None
