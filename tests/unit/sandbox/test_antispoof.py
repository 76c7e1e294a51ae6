"""The anti-spoofing rules as data: what a port's chain lets through, and which tables the
commands touch. The kernel side is tests/security/test_bridge_spoofing.py.

`verdict` below evaluates a port chain the way nf_tables does for the subset antispoof.py
emits (payload matches, counters, accept/drop), over frames described by their fields, so the
policy is checked without a kernel.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from supervisor.sandbox.host import antispoof
from supervisor.sandbox.host.antispoof import Port

MAC = "02:5b:0a:c9:05:0a"
IP = ipaddress.IPv4Address("10.201.5.10")
VICTIM_MAC = "02:5b:0a:c9:05:14"
VICTIM_IP = "10.201.5.20"
PORT = Port("sbx0123456789ab", MAC, IP)
BRIDGE = "sbxt1d0"
BASE = antispoof.BASE_CHAIN

Frame = dict[tuple[str, str], Any]


def verdict(rules: list[list[dict[str, Any]]], frame: Frame) -> str:
    """The chain's verdict on `frame`: accept, drop, or continue (no rule decided)."""
    for rule in rules:
        for statement in rule:
            if "match" in statement:
                match = statement["match"]
                payload = match["left"]["payload"]
                if "base" in payload:  # only the neighbour advertisement's target is read raw
                    assert (payload["base"], payload["offset"], payload["len"]) == ("th", 64, 128)
                    value = frame.get(("icmpv6", "target"))
                else:
                    value = frame.get((payload["protocol"], payload["field"]))
                right = match["right"]
                hit = value in (right["set"] if isinstance(right, dict) else [right])
                if hit != (match["op"] == "=="):
                    break  # this rule does not apply: next rule
            elif "counter" in statement:
                continue
            else:
                (final,) = statement
                assert final in ("accept", "drop"), statement
                return str(final)
    return "continue"


def arp(
    op: str = "request",
    eth_src: str = MAC,
    sha: str = MAC,
    spa: str = str(IP),
    **fields: Any,
) -> Frame:
    frame: Frame = {
        ("ether", "saddr"): eth_src,
        ("ether", "type"): "arp",
        ("arp", "htype"): 1,
        ("arp", "ptype"): "ip",
        ("arp", "hlen"): 6,
        ("arp", "plen"): 4,
        ("arp", "operation"): op,
        ("arp", "saddr ether"): sha,
        ("arp", "saddr ip"): spa,
    }
    frame.update({("arp", k): v for k, v in fields.items()})
    return frame


def ipv4(src: str = str(IP), eth_src: str = MAC) -> Frame:
    return {("ether", "saddr"): eth_src, ("ether", "type"): "ip", ("ip", "saddr"): src}


def port_verdict(frame: Frame) -> str:
    return verdict(antispoof.port_rules(PORT), frame)


# -- what a port may send ----------------------------------------------------------------------


def test_own_arp_and_ipv4_pass() -> None:
    assert port_verdict(arp("request")) == "accept"
    assert port_verdict(arp("reply")) == "accept"
    assert port_verdict(ipv4()) == "accept"


def test_arp_claiming_another_address_is_dropped() -> None:
    # Gratuitous ARP for the victim's address (or the gateway's) with the sandbox's own MAC.
    assert port_verdict(arp(spa=VICTIM_IP)) == "drop"
    assert port_verdict(arp("reply", spa="10.201.5.1")) == "drop"


def test_arp_with_a_forged_sender_mac_is_dropped() -> None:
    assert port_verdict(arp(sha=VICTIM_MAC)) == "drop"


def test_a_forged_ethernet_source_is_dropped_whatever_the_payload() -> None:
    assert port_verdict(ipv4(eth_src=VICTIM_MAC)) == "drop"
    assert port_verdict(arp(eth_src=VICTIM_MAC, sha=VICTIM_MAC)) == "drop"


def test_ipv4_from_another_source_is_dropped() -> None:
    for src in (VICTIM_IP, "10.201.5.1", "0.0.0.0", "192.0.2.1"):
        assert port_verdict(ipv4(src)) == "drop", src


def test_arp_of_another_layout_or_operation_is_dropped() -> None:
    # The sender fields are read at Ethernet/IPv4 offsets: any other layout could hide them.
    assert port_verdict(arp(hlen=8)) == "drop"
    assert port_verdict(arp(plen=16)) == "drop"
    assert port_verdict(arp(htype=6)) == "drop"  # IEEE 802, which Linux would also accept
    assert port_verdict(arp(ptype="ip6")) == "drop"
    assert port_verdict(arp(op="inrequest")) == "drop"


def test_ipv6_vlan_tags_and_other_ether_types_are_dropped() -> None:
    # sandboxd assigns no IPv6: neighbour discovery is the only IPv6 a sandbox could send,
    # and it is a spoofing vector of its own. A VLAN tag (even VLAN 0, which the host strips)
    # shows as ether type 8021q: the ARP or IP inside is never looked at.
    for ether_type in ("ip6", "8021q", "8021ad", "0x88cc", "0x8035"):
        frame = {("ether", "saddr"): MAC, ("ether", "type"): ether_type}
        assert port_verdict(frame) == "drop", ether_type


ETHER_TYPES = st.sampled_from(["arp", "ip", "ip6", "8021q", "0x88cc"])
MACS = st.sampled_from([MAC, VICTIM_MAC, "ff:ff:ff:ff:ff:ff"])
IPS = st.sampled_from([str(IP), VICTIM_IP, "0.0.0.0"])


FIELDS = st.fixed_dictionaries(
    {
        "ether_type": ETHER_TYPES,
        "eth_src": MACS,
        "sha": MACS,
        "spa": IPS,
        "ip_src": IPS,
        "op": st.sampled_from(["request", "reply", "inrequest"]),
        "hlen": st.sampled_from([6, 8]),
    }
)


@given(FIELDS)
def test_a_port_accepts_exactly_its_own_sources(f: dict[str, Any]) -> None:
    frame = {**arp(f["op"], f["eth_src"], f["sha"], f["spa"], hlen=f["hlen"])}
    frame[("ip", "saddr")] = f["ip_src"]
    frame[("ether", "type")] = f["ether_type"]
    own = f["eth_src"] == MAC
    legit_arp = f["ether_type"] == "arp" and f["sha"] == MAC and f["spa"] == str(IP)
    legit_arp = legit_arp and f["hlen"] == 6 and f["op"] in ("request", "reply")
    legit_ip = f["ether_type"] == "ip" and f["ip_src"] == str(IP)
    expected = "accept" if own and (legit_arp or legit_ip) else "drop"
    # Never "continue": a port's chain decides every frame of its port.
    assert port_verdict(frame) == expected


# -- the commands ------------------------------------------------------------------------------


def objects(commands: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(verb, object kind, object) of each command."""
    out = []
    for command in commands:
        ((verb, body),) = command.items()
        ((kind, obj),) = body.items()
        out.append((verb, kind, obj))
    return out


def test_every_command_stays_in_the_bridges_own_table() -> None:
    table = antispoof.table_name(BRIDGE)
    assert table == "sandboxd-sbxt1d0"
    batches = [
        antispoof.install(BRIDGE, PORT),
        antispoof.remove(BRIDGE, PORT.ifname),
        antispoof.repair(BRIDGE, [PORT]),
        antispoof.rebuild(BRIDGE, [PORT]),
        antispoof.drop_table(BRIDGE),
    ]
    for batch in batches:
        json.dumps({"nftables": batch})  # what nftables.run sends
        for _, kind, obj in objects(batch):
            assert obj["family"] == "bridge"
            assert (obj["name"] if kind == "table" else obj["table"]) == table


def test_install_replaces_the_ports_chain_and_maps_the_port_to_it() -> None:
    commands = objects(antispoof.install(BRIDGE, PORT))
    assert [(v, k) for v, k, _ in commands[:2]] == [("add", "chain"), ("flush", "chain")]
    assert all(o["name"] == PORT.ifname for _, _, o in commands[:2])
    rules = [o for v, k, o in commands if k == "rule"]
    assert [r["expr"] for r in rules] == antispoof.port_rules(PORT)
    assert all(r["chain"] == PORT.ifname for r in rules)
    verb, kind, element = commands[-1]
    assert (verb, kind, element["name"]) == ("add", "element", "ports")
    assert element["elem"] == [[PORT.ifname, {"jump": {"target": PORT.ifname}}]]


def test_remove_adds_first_so_that_it_never_fails_on_a_missing_port() -> None:
    commands = [(v, k) for v, k, _ in objects(antispoof.remove(BRIDGE, PORT.ifname))]
    assert commands == [
        ("add", "chain"),
        ("add", "element"),
        ("delete", "element"),
        ("delete", "chain"),
    ]


def test_repair_builds_the_skeleton_and_never_deletes() -> None:
    commands = objects(antispoof.repair(BRIDGE, [PORT, Port("sbxffffffffffff", MAC, IP)]))
    assert all(verb in ("add", "flush") for verb, _, _ in commands)
    base = next(o for v, k, o in commands if k == "chain" and o["name"] == "prerouting")
    assert (base["type"], base["hook"], base["policy"]) == ("filter", "prerouting", "accept")
    assert base["prio"] < -300  # ahead of the bridge family's dstnat and filter priorities
    # The base chain is flushed before its rules are added: a repair run twice adds them once.
    flush = commands.index(("flush", "chain", {**base_ref(), "name": BASE}))
    rules = [i for i, (_, k, o) in enumerate(commands) if k == "rule" and o["chain"] == BASE]
    assert rules and min(rules) > flush
    assert [commands[i][2]["expr"] for i in rules] == antispoof.base_rules()
    elements = [o["elem"][0][0] for v, k, o in commands if k == "element"]
    assert elements == [PORT.ifname, "sbxffffffffffff"]


def base_ref() -> dict[str, str]:
    return {"family": "bridge", "table": antispoof.table_name(BRIDGE)}


def test_rebuild_is_one_batch_that_drops_the_table_then_repairs() -> None:
    assert antispoof.rebuild(BRIDGE, [PORT]) == [
        *antispoof.drop_table(BRIDGE),
        *antispoof.repair(BRIDGE, [PORT]),
    ]
    assert [(v, k) for v, k, _ in objects(antispoof.drop_table(BRIDGE))] == [
        ("add", "table"),
        ("delete", "table"),
    ]


def test_the_base_chain_sends_each_port_to_its_own_chain() -> None:
    (rule,) = antispoof.base_rules()
    assert rule == [{"vmap": {"key": {"meta": {"key": "iifname"}}, "data": "@ports"}}]


# -- IPv6 (a port with a lease in the daemon's subnet6) --------------------------------------

IP6 = ipaddress.IPv6Address("fd00:88::a")
LINK_LOCAL = "fe80::5b:aff:fec9:50a"  # what the kernel derives from MAC (modified EUI-64)
PORT6 = Port("sbx0123456789ab", MAC, IP, IP6)


def ipv6(src: str = str(IP6), nexthdr: str = "udp", icmp: str | None = None,
         target: str | None = None, eth_src: str = MAC) -> Frame:  # fmt: skip
    frame: Frame = {("ether", "saddr"): eth_src, ("ether", "type"): "ip6",
                    ("ip6", "saddr"): src, ("ip6", "nexthdr"): nexthdr}  # fmt: skip
    if icmp is not None:
        frame[("icmpv6", "type")] = icmp
    if target is not None:
        frame[("icmpv6", "target")] = f"0x{int(ipaddress.IPv6Address(target)):032x}"
    return frame


def v6_verdict(frame: Frame) -> str:
    return verdict(antispoof.port_rules(PORT6), frame)


def test_the_link_local_address_is_the_kernels_eui64_one() -> None:
    from supervisor.sandbox.host.ipam import link_local_for  # noqa: PLC0415

    assert str(link_local_for(MAC)) == LINK_LOCAL


def test_own_ipv6_passes_from_both_own_addresses() -> None:
    for src in (str(IP6), LINK_LOCAL):
        assert v6_verdict(ipv6(src, "tcp")) == "accept"
        assert v6_verdict(ipv6(src, "udp")) == "accept"
        assert v6_verdict(ipv6(src, "ipv6-icmp", "echo-request")) == "accept"
        assert v6_verdict(ipv6(src, "ipv6-icmp", "nd-neighbor-solicit")) == "accept"
        assert v6_verdict(ipv6(src, "ipv6-icmp", "nd-router-solicit")) == "accept"
    for target in (str(IP6), LINK_LOCAL):
        assert v6_verdict(ipv6(LINK_LOCAL, "ipv6-icmp", "nd-neighbor-advert", target)) == "accept"


def test_spoofed_ipv6_is_dropped() -> None:
    for src in ("fd00:88::14", "fd00:88::1", "fe80::1", "::", "2001:db8::1", "::1"):
        assert v6_verdict(ipv6(src)) == "drop", src
    assert v6_verdict(ipv6(eth_src=VICTIM_MAC)) == "drop"
    # A neighbour advertisement for the gateway's or a neighbour's address, from its own.
    for target in ("fd00:88::1", "fd00:88::14", "fe80::5b:aff:fec9:514"):
        assert v6_verdict(ipv6(str(IP6), "ipv6-icmp", "nd-neighbor-advert", target)) == "drop"
    for kind in ("nd-router-advert", "nd-redirect"):
        assert v6_verdict(ipv6(LINK_LOCAL, "ipv6-icmp", kind)) == "drop", kind
    # Extension headers (hop-by-hop, routing, fragment, ...) could hide an ICMPv6 message.
    for nexthdr in ("hopopts", "frag", "routing", "dstopts", "esp"):
        assert v6_verdict(ipv6(nexthdr=nexthdr)) == "drop", nexthdr


def test_without_subnet6_all_ipv6_is_dropped_still() -> None:
    assert port_verdict(ipv6(LINK_LOCAL, "ipv6-icmp", "nd-neighbor-solicit")) == "drop"
    assert port_verdict(ipv6()) == "drop"
