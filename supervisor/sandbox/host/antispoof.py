"""Anti-spoofing on the bridge: what each sandbox's port may send, as nftables JSON commands.

Pure: builds the commands (libnftables-json(5)); supervisor/linux/nftables.py runs them and
sandbox/host/network.py decides when (attach, detach, daemon start).

The threat: a sandbox granted NET_RAW can write any frame, one granted NET_ADMIN can give its
eth0 any MAC and address. Without a filter it can send gratuitous ARP for a neighbour's or the
gateway's address (the host's or the neighbours' ARP entry moves to its MAC and their traffic
to it), use a neighbour's MAC as Ethernet source (the bridge learns that MAC on its port), or
send IPv4 from another address. IPAM gives every sandbox one address and a MAC derived from it
(ipam.mac_for), and there is no DHCP, so a sandbox never legitimately sends anything else. Its
port accepts exactly:

- Ethernet source = its MAC, and of those only
- ARP for Ethernet/IPv4, request or reply, sender MAC = its MAC, sender IP = its address;
- IPv4 with source = its address;
- with the daemon's `subnet6`, IPv6 with source = its IPv6 address or the fe80:: address the
  kernel derives from its MAC (ipam.link_local_for), and of those only TCP, UDP and ICMPv6
  directly after the IPv6 header (an extension header could hide an ICMPv6 message from the
  next rules, and nothing a service sends needs one), no router advertisement or redirect
  (either would make the sandbox its neighbours' or the host's IPv6 router), and a neighbour
  advertisement only for one of its own addresses (its target, read as the 16 bytes at
  offset 8 of the ICMPv6 header: nft 1.0.6 has no `icmpv6 taddr`). Addresses are added with
  IFA_F_NODAD (the leases make them unique), so a sandbox never needs the unspecified source
  `::` of duplicate address detection, which would let it probe, and so block, a neighbour's
  address while that neighbour starts (the kernel still probes its link-local address that
  way; that goes, uncounted, and the address works all the same).

Everything else it sends is dropped, on purpose:

- IPv6 from a port without an IPv6 address (no `subnet6`): all a sandbox could send then is
  link-local neighbour discovery, which is itself the spoofing vector (a neighbour
  advertisement for another's address, a router advertisement making the sandbox the host's
  IPv6 router); dropping takes nothing that works.
- VLAN-tagged frames, even VLAN 0, which the host untags and then processes as plain ARP or
  IP: nft reads the ether type as sent (the tag included), so they fail the ether type test.
- Any other ether type (STP, LLDP, IPX ...): nothing in a sandbox needs them.

Where: one `bridge` family table per sandboxd bridge, ``sandboxd-<bridge>``; daemons on other
bridges (tests run several) each own theirs, and no other table is ever touched. Its base
chain hooks prerouting, which sees each frame as a port sends it, before the bridge learns the
source MAC (br_handle_frame_finish) and before it is forwarded or delivered to the host::

    table bridge sandboxd-sbx0 {
        map ports { type ifname : verdict; elements = { "sbx1a2b..." : jump sbx1a2b... } }
        chain prerouting {
            type filter hook prerouting priority -500; policy accept;
            iifname vmap @ports
        }
        chain sbx1a2b... {
            ether saddr != 02:5b:0a:58:00:02 counter drop
            ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4
                arp operation { request, reply }
                arp saddr ether 02:5b:0a:58:00:02 arp saddr ip 10.88.0.2 accept
            ether type ip ip saddr 10.88.0.2 accept
            counter drop
        }
    }

A port chain always ends in accept or drop. Frames of other ports (another daemon's, an
interface the operator added to the bridge) pass untouched. There is no catch-all for a
sandbox port without a chain: it would have to be scoped to this bridge (`meta ibrname` needs
CONFIG_NFT_BRIDGE_META, which kernels such as the test VM's lack; unscoped, "sbx*" would hit
other daemons' ports). Instead a sandbox never runs without its chain: attach installs it
before the sandbox's first instruction and fails closed (no veth) if it cannot.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from supervisor.sandbox.host.ipam import link_local_for

FAMILY = "bridge"
TABLE_PREFIX = "sandboxd-"
BASE_CHAIN = "prerouting"
PORTS_MAP = "ports"
# Ahead of the standard bridge priorities (dstnat -300, filter -200): we judge the frame
# exactly as the sandbox sent it, before another table rewrites it.
PRIORITY = -500

Command = dict[str, Any]


@dataclass(frozen=True)
class Port:
    """One sandbox's host-side veth and the only source addresses it may use."""

    ifname: str  # the host end of the veth pair, on the bridge
    mac: str  # the sandbox end's MAC (eth0), ipam.mac_for(ip)
    ip: ipaddress.IPv4Address
    ip6: ipaddress.IPv6Address | None = None  # its lease in the daemon's subnet6, if any


def table_name(bridge: str) -> str:
    return TABLE_PREFIX + bridge


# -- expressions -----------------------------------------------------------------------------


def _match(left: Any, right: Any, op: str = "==") -> Command:
    return {"match": {"op": op, "left": left, "right": right}}


def _payload(protocol: str, field: str) -> Any:
    return {"payload": {"protocol": protocol, "field": field}}


def _meta(key: str) -> Any:
    return {"meta": {"key": key}}


_COUNTER: Command = {"counter": None}
_DROP: Command = {"drop": None}
_ACCEPT: Command = {"accept": None}


def port_rules(port: Port) -> list[list[Command]]:
    """The port chain's rules, in order (each a list of statements)."""
    arp = [
        _match(_payload("ether", "type"), "arp"),
        # The fixed header fields too: the sender fields are read at the offsets of
        # Ethernet/IPv4 ARP, so only that layout may pass.
        _match(_payload("arp", "htype"), 1),
        _match(_payload("arp", "ptype"), "ip"),
        _match(_payload("arp", "hlen"), 6),
        _match(_payload("arp", "plen"), 4),
        _match(_payload("arp", "operation"), {"set": ["request", "reply"]}),
        _match(_payload("arp", "saddr ether"), port.mac),
        _match(_payload("arp", "saddr ip"), str(port.ip)),
        _ACCEPT,
    ]
    ipv4 = [
        _match(_payload("ether", "type"), "ip"),
        _match(_payload("ip", "saddr"), str(port.ip)),
        _ACCEPT,
    ]
    return [
        [_match(_payload("ether", "saddr"), port.mac, "!="), _COUNTER, _DROP],
        arp,
        ipv4,
        *(ipv6_rules(port.ip6, link_local_for(port.mac)) if port.ip6 else []),
        [_COUNTER, _DROP],
    ]


def _target(ip: ipaddress.IPv6Address) -> Command:
    """A neighbour advertisement's target address is `ip` (ICMPv6 header + 8 bytes)."""
    raw = {"payload": {"base": "th", "offset": 64, "len": 128}}
    return _match(raw, f"0x{int(ip):032x}")


def ipv6_rules(
    ip6: ipaddress.IPv6Address, link_local: ipaddress.IPv6Address
) -> list[list[Command]]:
    """A port's IPv6 rules (see the module's docstring), between IPv4 and the final drop."""
    ip6_frame = _match(_payload("ether", "type"), "ip6")
    icmp = _match(_payload("ip6", "nexthdr"), "ipv6-icmp")
    advert = _match(_payload("icmpv6", "type"), "nd-neighbor-advert")
    own = {"set": [str(ip6), str(link_local)]}
    return [
        # The unspecified source: the kernel's own duplicate address detection and MLD reports
        # of the link-local address while it is tentative (a second or so after eth0 comes
        # up). Dropped before the source check, so that check's counter counts only forgeries.
        [ip6_frame, _match(_payload("ip6", "saddr"), "::"), _DROP],
        [ip6_frame, _match(_payload("ip6", "saddr"), own, "!="), _COUNTER, _DROP],
        [ip6_frame, _match(_payload("ip6", "nexthdr"), {"set": ["tcp", "udp", "ipv6-icmp"]},
                           "!="), _COUNTER, _DROP],
        [ip6_frame, icmp, _match(_payload("icmpv6", "type"),
                                 {"set": ["nd-router-advert", "nd-redirect"]}), _COUNTER, _DROP],
        [ip6_frame, icmp, advert, _target(ip6), _ACCEPT],
        [ip6_frame, icmp, advert, _target(link_local), _ACCEPT],
        [ip6_frame, icmp, advert, _COUNTER, _DROP],
        [ip6_frame, _ACCEPT],
    ]  # fmt: skip


def base_rules() -> list[list[Command]]:
    """The base chain: each port's frames go to its chain; other ports' frames pass."""
    return [[{"vmap": {"key": _meta("iifname"), "data": "@" + PORTS_MAP}}]]


# -- commands --------------------------------------------------------------------------------


def _obj(kind: str, bridge: str, **fields: Any) -> Command:
    return {kind: {"family": FAMILY, "table": table_name(bridge), **fields}}


def _table(bridge: str) -> Command:
    return {"table": {"family": FAMILY, "name": table_name(bridge)}}


def _rule(bridge: str, chain: str, expr: list[Command]) -> Command:
    return {"add": _obj("rule", bridge, chain=chain, expr=expr)}


def _element(bridge: str, ifname: str) -> Command:
    return _obj("element", bridge, name=PORTS_MAP, elem=[[ifname, {"jump": {"target": ifname}}]])


def install(bridge: str, port: Port) -> list[Command]:
    """Give `port` its rules, replacing any it had; needs the table (`repair` builds it)."""
    return [
        {"add": _obj("chain", bridge, name=port.ifname)},
        {"flush": _obj("chain", bridge, name=port.ifname)},
        *(_rule(bridge, port.ifname, rule) for rule in port_rules(port)),
        {"add": _element(bridge, port.ifname)},
    ]


def remove(bridge: str, ifname: str) -> list[Command]:
    """Take a port's rules out. Adding before deleting makes it idempotent (nft 1.0.6 has no
    `destroy`) while the table exists."""
    chain = _obj("chain", bridge, name=ifname)
    return [
        {"add": chain},
        {"add": _element(bridge, ifname)},
        {"delete": _element(bridge, ifname)},
        {"delete": chain},
    ]


def repair(bridge: str, ports: Iterable[Port]) -> list[Command]:
    """Create the table's skeleton if missing, rewrite the base chain, (re)install `ports`.

    Leaves other port chains alone, so it is safe while another attach installs its port."""
    commands: list[Command] = [
        {"add": _table(bridge)},
        {"add": _obj("map", bridge, name=PORTS_MAP, type="ifname", map="verdict")},
        {
            "add": _obj(
                "chain",
                bridge,
                name=BASE_CHAIN,
                type="filter",
                hook="prerouting",
                prio=PRIORITY,
                policy="accept",
            )
        },
        {"flush": _obj("chain", bridge, name=BASE_CHAIN)},
        *(_rule(bridge, BASE_CHAIN, rule) for rule in base_rules()),
    ]
    for port in ports:
        commands += install(bridge, port)
    return commands


def rebuild(bridge: str, ports: Iterable[Port]) -> list[Command]:
    """The table from scratch with exactly `ports`: what a restarted daemon installs. One
    transaction, so no frame ever sees the table half built."""
    return [*drop_table(bridge), *repair(bridge, ports)]


def drop_table(bridge: str) -> list[Command]:
    """Delete the bridge's table; idempotent (added first)."""
    return [{"add": _table(bridge)}, {"delete": _table(bridge)}]
