"""The NAT table's commands as data (nat.py): which table they touch, what a unit adds, and
that user text only ever travels as a JSON string. The kernel side is
tests/integration/test_daemon_nat.py."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from supervisor.sandbox.host import nat
from supervisor.sandbox.host.nat import UnitNat
from supervisor.unit.ports import parse_published_port

BRIDGE = "sbxt1d0"
SUBNET = "10.201.5.0/24"


def unit(name: str = "web", n: int = 2, *ports: str, outbound: bool = True) -> UnitNat:
    return UnitNat(
        name,
        f"sbx{n:012x}",
        ipaddress.IPv4Address(f"10.201.5.{n}"),
        outbound,
        tuple(parse_published_port(p) for p in ports),
    )


def objects(commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [next(iter(body.values())) for command in commands for body in command.values()]


def test_every_command_names_our_table_and_nothing_else() -> None:
    u = unit("web", 2, "8080:80", "127.0.0.1:5353:53/udp")
    batches = [
        nat.rebuild(BRIDGE, SUBNET, [u]),
        nat.install(BRIDGE, u),
        nat.remove(BRIDGE, u),
        nat.drop_table(BRIDGE),
    ]
    for batch in batches:
        for obj in objects(batch):
            assert obj["family"] == "ip"
            assert obj.get("table", obj.get("name")) == "sandboxd-" + BRIDGE
    # No command ever flushes or deletes more than our table's own objects.
    assert not any("ruleset" in json.dumps(c) for batch in batches for c in batch)


def test_a_unit_is_one_chain_its_map_elements_and_its_outbound_entry() -> None:
    u = unit("web", 2, "8080:80", "127.0.0.1:5353:53/udp", "9000-9001:9100-9101")
    batch = nat.install(BRIDGE, u)
    rules = [c["add"]["rule"] for c in batch if "rule" in c.get("add", {})]
    assert {r["chain"] for r in rules} == {u.chain}
    assert {r["comment"] for r in rules} == {"sandboxd unit web"}
    dnat = [(s["dnat"]["addr"], s["dnat"]["port"]) for r in rules for s in r["expr"] if "dnat" in s]
    assert dnat == [
        ("10.201.5.2", 80),
        ("10.201.5.2", 53),
        ("10.201.5.2", 9100),
        ("10.201.5.2", 9101),
    ]
    elements = {c["add"]["element"]["name"]: c["add"]["element"]["elem"] for c in batch
                if "element" in c.get("add", {})}  # fmt: skip
    jump = {"jump": {"target": u.chain}}
    assert elements == {
        "published": [[{"concat": ["tcp", 8080]}, jump], [{"concat": ["tcp", 9000]}, jump],
                      [{"concat": ["tcp", 9001]}, jump]],
        "published_at": [[{"concat": ["127.0.0.1", "udp", 5353]}, jump]],
        "outbound": ["10.201.5.2"],
    }  # fmt: skip


def test_installing_a_unit_costs_the_same_whatever_the_table_holds() -> None:
    # The batch for one unit names only that unit's objects: nothing grows with the others.
    first = nat.install(BRIDGE, unit("a", 2, "8080:80"))
    later = nat.install(BRIDGE, unit("b", 200, "8081:80"))
    assert len(first) == len(later)
    assert "sbx000000000002" not in json.dumps(later)


def test_without_outbound_or_ports_a_unit_needs_nothing_and_is_kept_from_leaving() -> None:
    quiet = unit("quiet", 3, outbound=False)
    assert not quiet.needs_table()
    assert not [c for c in nat.install(BRIDGE, quiet) if "element" in c.get("add", {})]
    forward = nat.base_rules(BRIDGE, SUBNET)["forward"]
    # Traffic from the bridge to elsewhere, not from an outbound address, is dropped.
    assert {"drop": None} in forward[0]
    assert {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                      "right": "@outbound"}} in forward[0]  # fmt: skip


def test_unit_names_travel_as_json_strings_only() -> None:
    # Unit names allow "@", "." and "-": nft syntax characters must never matter, whatever
    # the name, because the name is never part of an nft command string.
    evil = 'x"; flush ruleset; add table ip pwn #'
    batch = nat.install(BRIDGE, unit(evil, 4, "8080:80"))
    text = json.dumps({"nftables": batch})
    assert json.loads(text)["nftables"] == batch
    comments = [c["add"]["rule"]["comment"] for c in batch if "rule" in c.get("add", {})]
    assert comments == [f"sandboxd unit {evil}"]
    names = {o.get("name") for o in objects(batch)} - {None}
    assert evil not in json.dumps(sorted(names))  # chain and map names never hold it
