"""The daemon's side of a bridge's NAT table (nat.py builds the commands): which units are in
it, kept on disk so a restarted daemon can rebuild it, and the kernel switches it needs.

Every unit in the table has `<data_dir>/network/nat/<unit>.json` (its address, outbound flag
and published ports), written before its rules are installed and removed after they are gone,
so after a `kill -9` the files of units that still run say exactly what their rules were.
One file per unit keeps an install O(1) on disk as it is in nftables.

Changes go through one asyncio.Lock: two nft processes started close together may commit in
either order, and a unit installing while the last one leaving drops the table must not lose
its rules. The lock queues the coroutines, it never blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
from collections.abc import Iterable
from pathlib import Path

from supervisor.errors import NetworkError
from supervisor.linux import nftables, procsys, safefs
from supervisor.log import get_logger
from supervisor.sandbox.host import nat
from supervisor.sandbox.host.nat import UnitNat
from supervisor.unit.ports import PublishedPort, parse_published_port

log = get_logger()


class NatTable:
    def __init__(self, bridge: str, subnet: str, state_dir: Path):
        self.bridge, self.subnet, self.dir = bridge, subnet, state_dir
        self._units: dict[str, UnitNat] = {}
        self._whole = False  # the kernel's table is known to hold exactly self._units
        self._lock = asyncio.Lock()

    def ports(self) -> dict[str, tuple[PublishedPort, ...]]:
        return {u: n.ports for u, n in self._units.items()}

    def conflict(self, unit: str, ports: Iterable[PublishedPort]) -> str | None:
        """A message if another unit in the table holds one of `ports` (a unit file loaded
        before the conflicting one kept running as its last valid version, say)."""
        for port in ports:
            for other, theirs in self._units.items():
                for held in theirs.ports if other != unit else ():
                    if port.overlaps(held):
                        return f'published port {port} conflicts with {held} of unit "{other}"'
        return None

    async def add(self, entry: UnitNat) -> None:
        """Put the unit's rules in (replacing any it had); NetworkError if nft refuses."""
        async with self._lock:
            self._write(entry)
            old = self._units.get(entry.unit)
            self._units[entry.unit] = entry
            if self._whole:
                batch = [*(nat.remove(self.bridge, old) if old else []), *nat.install(
                    self.bridge, entry)]  # fmt: skip
                try:
                    await nftables.run(batch)
                except nftables.NftablesError:
                    # The table changed under us (`nft flush ruleset`): rebuild it whole
                    # below, with every unit we know, instead of failing this start.
                    self._whole = False
            if not self._whole:
                batch = nat.rebuild(self.bridge, self.subnet, self._units.values())
                await self._run(batch, f"cannot install the NAT rules of {entry.unit}")
            self._sysctls(entry)

    async def discard(self, unit: str) -> None:
        """Take the unit's rules out; the table goes with the last unit."""
        async with self._lock:
            entry = self._units.pop(unit, None) or self._read(unit)
            if entry is None:
                return
            if not self._units:
                batch = nat.drop_table(self.bridge)
            elif self._whole:
                batch = nat.remove(self.bridge, entry)
            else:
                batch = nat.rebuild(self.bridge, self.subnet, self._units.values())
            await self._run(batch, f"cannot remove the NAT rules of {unit}")
            if not self._units:
                self._whole = False  # no table now: the next add builds it
            self._unlink(unit)

    async def rebuild(self, running: Iterable[str]) -> list[str]:
        """After a daemon restart: exactly the running units that have a file, the rest's
        files deleted; the table dropped if none is left. Returns the units kept."""
        running = set(running)
        async with self._lock:
            self._units = {}
            for name in self._names():
                entry = self._read(name) if name in running else None
                if entry is None:
                    self._unlink(name)
                else:
                    self._units[name] = entry
            if self._units:
                batch = nat.rebuild(self.bridge, self.subnet, self._units.values())
            else:
                batch = nat.drop_table(self.bridge)
            await self._run(batch, "cannot rebuild the NAT rules")
            self._whole = bool(self._units)
            for entry in self._units.values():
                self._sysctls(entry)
            return sorted(self._units)

    async def drop(self) -> None:
        async with self._lock:
            self._units = {}
            await self._run(nat.drop_table(self.bridge), "cannot remove the NAT table")
            self._whole = False  # no table now: the next add builds it

    # -- nft and sysctls -------------------------------------------------------------------

    async def _run(self, batch: list[nat.Command], what: str) -> None:
        try:
            await nftables.run(batch)
        except nftables.NftablesError as exc:
            self._whole = False  # the next change rebuilds from what we know
            raise NetworkError(f"{what} in table ip {nat.table_name(self.bridge)}: {exc}") from None
        self._whole = True

    def _sysctls(self, entry: UnitNat) -> None:
        """Forwarding for a unit that needs it (logged: it makes the host a router), and
        route_localnet on our bridge for the host's own 127.0.0.1 to reach published ports.
        Nothing is turned off again: another program may rely on forwarding by then. Through
        a procfs instance of their own (procsys.py), from the daemon's (the host's) network
        namespace: the host's /proc/sys/net costs a walk over every namespace's dentry."""
        if not entry.needs_table():
            return
        with procsys.opened() as proc_sys:
            if self._set(proc_sys, "net/ipv4/ip_forward", "1"):
                log.info("daemon.ip_forward_enabled", unit=entry.unit, sysctl="net.ipv4.ip_forward")
            if entry.ports:
                self._set(proc_sys, f"net/ipv4/conf/{self.bridge}/route_localnet", "1")

    def _set(self, proc_sys: int, key: str, value: str) -> bool:
        """Write a sysctl if it differs; True if it was changed."""
        try:
            return procsys.ensure(proc_sys, key, value)
        except OSError as exc:
            raise NetworkError(f"cannot set /proc/sys/{key} to {value}: {exc.strerror}") from None

    # -- per-unit files --------------------------------------------------------------------

    def _names(self) -> list[str]:
        try:
            return [n.removesuffix(".json") for n in os.listdir(self.dir) if n.endswith(".json")]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise NetworkError(f"cannot list {self.dir}: {exc.strerror}") from None

    def _write(self, entry: UnitNat) -> None:
        data = {
            "unit": entry.unit,
            "chain": entry.chain,
            "ip": str(entry.ip),
            "outbound": entry.outbound,
            "ports": [str(p) for p in entry.ports],
        }
        try:
            with safefs.directory(self.dir, mkdir_mode=0o700) as directory:
                safefs.write_atomic(directory, entry.unit + ".json", json.dumps(data).encode())
        except OSError as exc:
            raise NetworkError(f"cannot write {self.dir}/{entry.unit}.json: {exc}") from None

    def _read(self, unit: str) -> UnitNat | None:
        """The unit's file; None if it is missing or not one of ours (logged)."""
        try:
            with safefs.directory(self.dir, mkdir_mode=0o700) as directory:
                data = json.loads(safefs.read_owned(directory, unit + ".json"))
            return UnitNat(
                unit=unit,
                chain=str(data["chain"]),
                ip=ipaddress.IPv4Address(data["ip"]),
                outbound=bool(data["outbound"]),
                ports=tuple(parse_published_port(p) for p in data["ports"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("daemon.nat_state_unreadable", unit=unit, error=str(exc))
            return None

    def _unlink(self, unit: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir / (unit + ".json"))
