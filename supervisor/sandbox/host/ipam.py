"""Address leases for bridge-mode sandboxes, persisted in `<data_dir>/network/leases.json`
(IPv4) and, with a `subnet6` in the daemon config, `leases6.json` (IPv6, same layout).

A lease maps a unit name to one address of the daemon's subnet. It is taken before the first
launch, kept across restarts of the unit and of the daemon (so a service keeps its address and
peers can rely on it), and freed only when the unit is removed.

The file is the only state: every operation reads it, changes it and writes it back atomically
(temporary file, fsync, rename, fsync of the directory), so a daemon that crashes at any point
leaves either the old or the new table, never a torn one, and a restarted daemon needs no
in-memory state to avoid handing out an address twice. The file is a few hundred bytes; reading
it per operation costs less than a netlink round trip.

Layout (version 1)::

    {"version": 1, "subnet": "10.88.0.0/16", "leases": {"web": "10.88.0.2", "db": "10.88.0.10"}}
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, TypeVar, cast

from supervisor.errors import NetworkError
from supervisor.linux import safefs

FORMAT_VERSION = 1
Addr = TypeVar("Addr", ipaddress.IPv4Address, ipaddress.IPv6Address)


def gateway_of(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The bridge's own address: the subnet's first host address (10.88.0.1 for 10.88.0.0/16)."""
    return subnet.network_address + 1


def gateway6_of(subnet: ipaddress.IPv6Network) -> ipaddress.IPv6Address:
    """The bridge's IPv6 address: the first after the subnet-router anycast (fd00:88::1)."""
    return subnet.network_address + 1


def link_local_for(mac: str) -> ipaddress.IPv6Address:
    """The fe80:: address the kernel gives an interface with `mac` (modified EUI-64, RFC 4291
    appendix A; the default addr_gen_mode of a new netns): what a port may also send from."""
    b = bytes.fromhex(mac.replace(":", ""))
    iid = bytes([b[0] ^ 0x02, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]])
    return ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid)


def mac_for(ip: ipaddress.IPv4Address) -> str:
    """A fixed, locally administered unicast MAC for an address of the subnet (02:5b:<ip>).

    The bridge gets the gateway's, each eth0 its lease's. With random MACs a restarted sandbox
    keeps its address but not its MAC, and the host's and peers' ARP entries point nowhere
    until they expire (seconds unreachable); a bridge would take its lowest port's MAC.
    """
    return ":".join(f"{b:02x}" for b in (0x02, 0x5B, *ip.packed))


def check_static(address: str, subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Interface:
    """Validate a unit's `network.address` against the daemon's subnet; return it parsed.

    The prefix must match the subnet's: a sandbox that believes in another prefix would route
    part of its own subnet through the gateway, or reach past it without one.
    """
    try:
        iface = ipaddress.IPv4Interface(address)
    except ValueError:
        raise NetworkError(f"address {address!r} is not an IPv4 address with prefix") from None
    ip = iface.ip
    if ip not in subnet:
        raise NetworkError(f"address {ip} is outside the daemon's subnet {subnet}")
    if iface.network.prefixlen != subnet.prefixlen:
        raise NetworkError(
            f"address {address} has prefix /{iface.network.prefixlen} but the daemon's subnet "
            f"is {subnet}; write {ip}/{subnet.prefixlen}"
        )
    if ip in (subnet.network_address, subnet.broadcast_address):
        raise NetworkError(f"address {ip} is the network or broadcast address of {subnet}")
    if ip == gateway_of(subnet):
        raise NetworkError(f"address {ip} is the bridge's own address (the gateway of {subnet})")
    return ipaddress.IPv4Interface(f"{ip}/{subnet.prefixlen}")


def check_static6(address: str, subnet: ipaddress.IPv6Network) -> ipaddress.IPv6Interface:
    """Validate a unit's `network.address6` against the daemon's `subnet6`, as check_static."""
    try:
        iface = ipaddress.IPv6Interface(address)
    except ValueError:
        raise NetworkError(f"address6 {address!r} is not an IPv6 address with prefix") from None
    ip = iface.ip
    if ip not in subnet:
        raise NetworkError(f"address6 {ip} is outside the daemon's subnet6 {subnet}")
    if iface.network.prefixlen != subnet.prefixlen:
        raise NetworkError(
            f"address6 {address} has prefix /{iface.network.prefixlen} but the daemon's "
            f"subnet6 is {subnet}; write {ip}/{subnet.prefixlen}"
        )
    if ip == subnet.network_address:
        raise NetworkError(f"address6 {ip} is the subnet-router anycast address of {subnet}")
    if ip == gateway6_of(subnet):
        raise NetworkError(f"address6 {ip} is the bridge's own address (the gateway of {subnet})")
    return ipaddress.IPv6Interface(f"{ip}/{subnet.prefixlen}")


class Leases(Generic[Addr]):
    """The lease table of one daemon for one address family (one subnet, one file)."""

    def __init__(
        self,
        path: Path,
        subnet: ipaddress.IPv4Network | ipaddress.IPv6Network,
        parse: Callable[[str], Addr],
    ) -> None:
        self.path = path
        self.subnet = subnet
        self._parse: Callable[[str], Addr] = parse

    # -- queries ---------------------------------------------------------------------------

    def leases(self) -> dict[str, Addr]:
        """unit name -> leased address, as on disk now."""
        return self._read()

    def get(self, unit: str) -> Addr | None:
        return self._read().get(unit)

    # -- changes ---------------------------------------------------------------------------

    def acquire(
        self, unit: str, static: ipaddress.IPv4Interface | ipaddress.IPv6Interface | None = None
    ) -> Addr:
        """The unit's address: its existing lease, the static one asked for, or a free one.

        A static address held by another unit is an error (never a silent steal). A unit whose
        static address changed gives up its old lease in the same write.
        """
        leases = self._read()
        current = leases.get(unit)
        if static is not None:
            wanted = self._parse(str(static.ip))
            holder = next((u for u, ip in leases.items() if ip == wanted and u != unit), None)
            if holder is not None:
                raise NetworkError(f"address {wanted} is already leased to unit {holder!r}")
            if current == wanted:
                return wanted
            leases[unit] = wanted
        else:
            if current is not None:
                return current
            leases[unit] = self._first_free(leases.values())
        self._write(leases)
        return leases[unit]

    def release(self, unit: str) -> bool:
        """Free the unit's lease; False if it had none."""
        leases = self._read()
        if leases.pop(unit, None) is None:
            return False
        self._write(leases)
        return True

    def retain(self, units: Iterable[str]) -> list[str]:
        """Free every lease whose unit is not in `units`; return the units freed."""
        keep = set(units)
        leases = self._read()
        gone = sorted(u for u in leases if u not in keep)
        if gone:
            self._write({u: ip for u, ip in leases.items() if u in keep})
        return gone

    # -- file ------------------------------------------------------------------------------

    def _first_free(self, taken: Iterable[Addr]) -> Addr:
        # The first host address is the bridge's (gateway_of, gateway6_of).
        used: set[object] = {*taken, self.subnet.network_address + 1}
        # hosts() is lazy: a /16 (or a /64) is not materialised, the scan stops at the first
        # gap. Its addresses are of this store's family (the subnet's).
        for ip in self.subnet.hosts():
            if ip not in used:
                return cast(Addr, ip)
        raise NetworkError(f"no free address left in {self.subnet} ({len(used) - 1} leased)")

    def _read(self) -> dict[str, Addr]:
        try:
            with safefs.directory(self.path.parent) as directory:
                raw = safefs.read_owned(directory, self.path.name)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise NetworkError(f"cannot read leases {self.path}: {exc.strerror}") from None
        try:
            data = json.loads(raw)
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"unsupported version {data.get('version')!r}")
            table = {str(u): self._parse(ip) for u, ip in data["leases"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Fail closed: guessing would risk giving a running sandbox's address to another.
            raise NetworkError(
                f"lease file {self.path} is corrupt ({exc}); fix or remove it while no "
                "bridge-mode sandbox runs"
            ) from None
        # After the operator changes the subnet, old leases cannot be configured any more:
        # forget them rather than fail every bridge unit.
        return {u: ip for u, ip in table.items() if ip in self.subnet}

    def _write(self, leases: dict[str, Addr]) -> None:
        data = {
            "version": FORMAT_VERSION,
            "subnet": str(self.subnet),
            "leases": {u: str(ip) for u, ip in sorted(leases.items())},
        }
        text = json.dumps(data, indent=1).encode() + b"\n"
        try:
            # In the daemon's 0700 data dir, never through a symlink (linux/safefs.py).
            with safefs.directory(self.path.parent, mkdir_mode=0o700) as directory:
                safefs.write_atomic(directory, self.path.name, text, 0o600)
                # The rename itself is durable only once the directory entry is on disk.
                os.fsync(directory)
        except OSError as exc:
            raise NetworkError(f"cannot write leases {self.path}: {exc.strerror}") from None


class LeaseStore(Leases[ipaddress.IPv4Address]):
    """IPv4 leases: `<data_dir>/network/leases.json`."""

    def __init__(self, path: Path, subnet: ipaddress.IPv4Network) -> None:
        super().__init__(path, subnet, ipaddress.IPv4Address)


class Lease6Store(Leases[ipaddress.IPv6Address]):
    """IPv6 leases (daemon `subnet6`): `<data_dir>/network/leases6.json`."""

    def __init__(self, path: Path, subnet: ipaddress.IPv6Network) -> None:
        super().__init__(path, subnet, ipaddress.IPv6Address)
