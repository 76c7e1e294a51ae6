"""Outbound NAT and published ports of a bridge's sandboxes, as nftables JSON commands.

Pure: builds libnftables-json(5) commands as data (never a rule string, so a unit name or an
address cannot inject nft syntax); supervisor/linux/nftables.py runs them and
sandbox/host/network.py decides when. The anti-spoofing rules live apart (antispoof.py, a
`bridge` table); these need the `ip` family's NAT hooks.

One table per sandboxd bridge, ``table ip sandboxd-<bridge>``, owned whole: created when the
first unit needs it, changed per unit, dropped when the daemon stops cleanly with no unit left
in it. Another program's tables are never named here. Per unit there is one chain named after
its host veth (no user text in a name) whose rules carry a comment naming the unit, one element
in the dispatch map per published host port, and its address in `outbound` if it may reach
out; installing or removing a unit touches only those, so it costs the same with 1 or 1000
units::

    table ip sandboxd-sbx0 {
        set outbound { type ipv4_addr; elements = { 10.88.0.2 } }
        map published { type inet_proto . inet_service : verdict;
                        elements = { tcp . 8080 : jump sbx1a2b... } }
        map published_at { type ipv4_addr . inet_proto . inet_service : verdict;
                           elements = { 127.0.0.1 . udp . 5353 : jump sbx1a2b... } }
        chain guard {     # raw prerouting
            iifname "sbx0" ip daddr 127.0.0.0/8 counter drop
        }
        chain prerouting { fib daddr type local jump ports }   # nat, from outside
        chain output { fib daddr type local jump ports }       # nat, from the host itself
        chain ports {
            ip daddr . meta l4proto . th dport vmap @published_at
            meta l4proto . th dport vmap @published
        }
        chain forward {   # filter: outbound = false means no way out, not merely no NAT
            iifname "sbx0" oifname != "sbx0" ct direction original
                ip saddr != @outbound counter drop
        }
        chain postrouting {
            oifname "sbx0" ip saddr 127.0.0.0/8 masquerade      # host's own 127.0.0.1
            oifname "sbx0" ct status dnat ip saddr 10.88.0.0/16 masquerade   # hairpin
            oifname != "sbx0" ip saddr @outbound masquerade     # outbound NAT
        }
        chain sbx1a2b... {
            meta l4proto tcp th dport 8080 counter dnat to 10.88.0.2:80 comment "unit web"
        }
    }

Why each piece:

- DNAT only to a local destination (`fib daddr type local`): traffic the host routes for
  others on a published port number is not ours.
- `output`: `curl 127.0.0.1:8080` on the host. Such a packet leaves by the bridge with source
  127.0.0.1, which the kernel sends only with `route_localnet` on the bridge (network.py sets
  it on our bridge alone) and which the sandbox could not answer, hence the masquerade to the
  bridge address.
- `guard`: route_localnet would also let a packet *to* 127.0.0.1 arriving from the bridge reach
  the host's loopback services (CVE-2020-8558 in kube-proxy); sandboxes must not, so such
  packets are dropped before routing.
- Hairpin: a sandbox reaching a neighbour through the host's port would get the answer
  straight from the neighbour's address and drop it; masquerading DNATed traffic going back
  into the bridge makes the reply return through the host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from supervisor.unit.ports import PublishedPort

FAMILY = "ip"
TABLE_PREFIX = "sandboxd-"
OUTBOUND_SET = "outbound"
ANY_MAP = "published"
AT_MAP = "published_at"
PORTS_CHAIN = "ports"
LOOPBACK = "127.0.0.0/8"
COMMENT_MAX = 128  # NFT_USERDATA_MAXLEN is 256 bytes; a unit name is at most 63 characters

Command = dict[str, Any]

# (name, hook, type, priority): raw -300, dstnat -100, filter 0, srcnat 100.
_BASE_CHAINS = (
    ("guard", "prerouting", "filter", -300),
    ("prerouting", "prerouting", "nat", -100),
    ("output", "output", "nat", -100),
    ("forward", "forward", "filter", 0),
    ("postrouting", "postrouting", "nat", 100),
)


@dataclass(frozen=True)
class UnitNat:
    """What one unit gets in the table: its chain (named after its host veth), address and
    published ports, and whether its traffic may leave the host."""

    unit: str
    chain: str
    ip: ipaddress.IPv4Address
    outbound: bool
    ports: tuple[PublishedPort, ...] = field(default=())

    def needs_table(self) -> bool:
        return self.outbound or bool(self.ports)


def table_name(bridge: str) -> str:
    return TABLE_PREFIX + bridge


# -- expressions -----------------------------------------------------------------------------


def _match(left: Any, right: Any, op: str = "==") -> Command:
    return {"match": {"op": op, "left": left, "right": right}}


def _payload(protocol: str, field_: str) -> Any:
    return {"payload": {"protocol": protocol, "field": field_}}


def _meta(key: str) -> Any:
    return {"meta": {"key": key}}


def _prefix(network: str) -> Any:
    net = ipaddress.IPv4Network(network)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


_COUNTER: Command = {"counter": None}
_DROP: Command = {"drop": None}
_MASQUERADE: Command = {"masquerade": None}
_LOCAL = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
_DPORT = {"payload": {"protocol": "th", "field": "dport"}}


def comment(unit: str) -> str:
    """The rule comment naming a unit; only ever passed as a JSON string, never parsed."""
    return f"sandboxd unit {unit}"[:COMMENT_MAX]


def base_rules(bridge: str, subnet: str) -> dict[str, list[list[Command]]]:
    """Each base chain's rules (and the dispatch chain's), in order."""
    to_bridge = _match(_meta("oifname"), bridge)
    return {
        "guard": [
            [
                _match(_meta("iifname"), bridge),
                _match(_payload("ip", "daddr"), _prefix(LOOPBACK)),
                _COUNTER,
                _DROP,
            ]
        ],
        "prerouting": [[_LOCAL, {"jump": {"target": PORTS_CHAIN}}]],
        "output": [[_LOCAL, {"jump": {"target": PORTS_CHAIN}}]],
        PORTS_CHAIN: [
            [
                {
                    "vmap": {
                        "key": {"concat": [_payload("ip", "daddr"), _meta("l4proto"), _DPORT]},
                        "data": "@" + AT_MAP,
                    }
                }
            ],
            [{"vmap": {"key": {"concat": [_meta("l4proto"), _DPORT]}, "data": "@" + ANY_MAP}}],
        ],
        "forward": [
            [
                _match(_meta("iifname"), bridge),
                _match(_meta("oifname"), bridge, "!="),
                _match({"ct": {"key": "direction"}}, "original"),
                _match(_payload("ip", "saddr"), "@" + OUTBOUND_SET, "!="),
                _COUNTER,
                _DROP,
            ]
        ],
        "postrouting": [
            [to_bridge, _match(_payload("ip", "saddr"), _prefix(LOOPBACK)), _MASQUERADE],
            [
                to_bridge,
                _match({"ct": {"key": "status"}}, "dnat", "in"),
                _match(_payload("ip", "saddr"), _prefix(subnet)),
                _MASQUERADE,
            ],
            [
                _match(_meta("oifname"), bridge, "!="),
                _match(_payload("ip", "saddr"), "@" + OUTBOUND_SET),
                _MASQUERADE,
            ],
        ],
    }


def unit_rules(nat: UnitNat) -> list[list[Command]]:
    """The unit chain: one DNAT rule per published host port."""
    rules = []
    for port in nat.ports:
        for host_port, sandbox_port in port.pairs():
            match = [
                _match(_meta("l4proto"), port.protocol),
                _match(_DPORT, host_port),
            ]
            if port.host_ip is not None:
                match.insert(0, _match(_payload("ip", "daddr"), port.host_ip))
            target = {"dnat": {"addr": str(nat.ip), "port": sandbox_port}}
            rules.append([*match, _COUNTER, target])
    return rules


# -- commands --------------------------------------------------------------------------------


def _obj(kind: str, bridge: str, **fields: Any) -> Command:
    return {kind: {"family": FAMILY, "table": table_name(bridge), **fields}}


def _table(bridge: str) -> Command:
    return {"table": {"family": FAMILY, "name": table_name(bridge)}}


def _rule(bridge: str, chain: str, expr: list[Command], unit: str | None = None) -> Command:
    fields: dict[str, Any] = {"chain": chain, "expr": expr}
    if unit is not None:
        fields["comment"] = comment(unit)
    return {"add": _obj("rule", bridge, **fields)}


def _elements(nat: UnitNat) -> tuple[list[Any], list[Any]]:
    """(published elements, published_at elements) of the unit: key -> jump to its chain."""
    jump = {"jump": {"target": nat.chain}}
    any_addr: list[Any] = []
    at_addr: list[Any] = []
    for port in nat.ports:
        for host_port in port.host_ports:
            if port.host_ip is None:
                any_addr.append([{"concat": [port.protocol, host_port]}, jump])
            else:
                at_addr.append([{"concat": [port.host_ip, port.protocol, host_port]}, jump])
    return any_addr, at_addr


def _element_commands(verb: str, bridge: str, nat: UnitNat) -> list[Command]:
    any_addr, at_addr = _elements(nat)
    commands = []
    if any_addr:
        commands.append({verb: _obj("element", bridge, name=ANY_MAP, elem=any_addr)})
    if at_addr:
        commands.append({verb: _obj("element", bridge, name=AT_MAP, elem=at_addr)})
    if nat.outbound:
        commands.append({verb: _obj("element", bridge, name=OUTBOUND_SET, elem=[str(nat.ip)])})
    return commands


def install(bridge: str, nat: UnitNat) -> list[Command]:
    """Give the unit its chain, map elements and outbound entry; needs the table (`skeleton`).
    Replaces the rules of a chain by that name; the elements must not exist yet (`remove`
    first when re-installing)."""
    return [
        {"add": _obj("chain", bridge, name=nat.chain)},
        {"flush": _obj("chain", bridge, name=nat.chain)},
        *(_rule(bridge, nat.chain, rule, nat.unit) for rule in unit_rules(nat)),
        *_element_commands("add", bridge, nat),
    ]


def remove(bridge: str, nat: UnitNat) -> list[Command]:
    """Take the unit out: its elements, then its chain. Adding before deleting makes it
    idempotent while the table exists (nft 1.0.6 has no `destroy`)."""
    chain = _obj("chain", bridge, name=nat.chain)
    return [
        {"add": chain},
        *_element_commands("add", bridge, nat),
        *_element_commands("delete", bridge, nat),
        {"flush": chain},
        {"delete": chain},
    ]


def skeleton(bridge: str, subnet: str) -> list[Command]:
    """The table with its sets, maps and base chains, no unit in it. Meant for an absent
    table (`rebuild` drops any old one first)."""
    commands: list[Command] = [
        {"add": _table(bridge)},
        {"add": _obj("set", bridge, name=OUTBOUND_SET, type="ipv4_addr")},
        {
            "add": _obj(
                "map", bridge, name=ANY_MAP, type=["inet_proto", "inet_service"], map="verdict"
            )
        },
        {
            "add": _obj(
                "map",
                bridge,
                name=AT_MAP,
                type=["ipv4_addr", "inet_proto", "inet_service"],
                map="verdict",
            )
        },
        {"add": _obj("chain", bridge, name=PORTS_CHAIN)},
    ]
    for name, hook, kind, prio in _BASE_CHAINS:
        commands.append(
            {
                "add": _obj(
                    "chain", bridge, name=name, type=kind, hook=hook, prio=prio, policy="accept"
                )
            }
        )
    for chain, rules in base_rules(bridge, subnet).items():
        commands += [_rule(bridge, chain, rule) for rule in rules]
    return commands


def rebuild(bridge: str, subnet: str, units: Iterable[UnitNat]) -> list[Command]:
    """The table from scratch with exactly `units`, in one transaction: what a restarted
    daemon installs (it drops rules of units that are gone and any duplicate)."""
    commands = [*drop_table(bridge), *skeleton(bridge, subnet)]
    for nat in units:
        if nat.needs_table():
            commands += install(bridge, nat)
    return commands


def drop_table(bridge: str) -> list[Command]:
    """Delete the bridge's NAT table; idempotent (added first)."""
    return [{"add": _table(bridge)}, {"delete": _table(bridge)}]
