"""`[network] ports`: the syntax, its canonical spelling, and conflicts between units."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.unit.loader import UnitLoader
from supervisor.unit.ports import PublishedPort, parse_published_port


@pytest.mark.parametrize(
    ("text", "canonical", "pairs"),
    [
        ("8080:80", "8080:80/tcp", [(8080, 80)]),
        ("8080:80/TCP", "8080:80/tcp", [(8080, 80)]),
        ("127.0.0.1:5353:53/udp", "127.0.0.1:5353:53/udp", [(5353, 53)]),
        ("0.0.0.0:8080:80", "8080:80/tcp", [(8080, 80)]),  # every address, as Docker
        ("9000-9002:9000-9002", "9000-9002:9000-9002/tcp",
         [(9000, 9000), (9001, 9001), (9002, 9002)]),
        ("10.0.0.1:81-82:8081-8082/udp", "10.0.0.1:81-82:8081-8082/udp", [(81, 8081), (82, 8082)]),
    ],
)  # fmt: skip
def test_published_ports_parse_to_their_canonical_spelling(
    text: str, canonical: str, pairs: list[tuple[int, int]]
) -> None:
    port = parse_published_port(text)
    assert str(port) == canonical
    assert list(port.pairs()) == pairs
    assert parse_published_port(str(port)) == port  # the canonical spelling reads back


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("80", "is not a published port"),
        ("0:80", "outside 1-65535"),
        ("8080:70000", "outside 1-65535"),
        ("8080:80/sctp", "protocol 'sctp' is not tcp or udp"),
        ("9000-9002:9000", "equally long"),
        ("9002-9000:9002-9000", "ends before it starts"),
        ("1-2000:1-2000", "at most 1024 ports"),
        ("300.1.1.1:80:80", "not an IPv4 address"),
        ("224.0.0.1:80:80", "not a unicast address"),
        # Nothing but digits, dots, colons and a protocol name gets through: no nft syntax.
        ('1.2.3.4"; flush ruleset; ":80:80', "is not a published port"),
        ("[::1]:80:80", "is not a published port"),
    ],
)
def test_bad_published_ports_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_published_port(text)


def test_overlap_needs_the_protocol_a_port_and_an_address_in_common() -> None:
    def p(text: str) -> PublishedPort:
        return parse_published_port(text)

    assert p("8080:80").overlaps(p("8080:81"))
    assert p("8080:80").overlaps(p("127.0.0.1:8080:80"))  # no address is every address
    assert p("8079-8081:1-3").overlaps(p("8081:80"))
    assert not p("8080:80").overlaps(p("8080:80/udp"))
    assert not p("127.0.0.1:8080:80").overlaps(p("127.0.0.2:8080:80"))
    assert not p("8080-8081:1-2").overlaps(p("8082:80"))


def write(directory: Path, name: str, network: str) -> None:
    text = f'[service]\nexec = ["/bin/true"]\n[network]\n{network}\n'
    (directory / f"{name}.toml").write_text(text)


def test_a_port_another_unit_publishes_is_refused_naming_that_unit(tmp_path: Path) -> None:
    write(tmp_path, "alpha", 'mode = "bridge"\nports = ["18080:80"]')
    write(tmp_path, "beta", 'mode = "bridge"\nports = ["127.0.0.1:18081:80", "18080:8080"]')
    write(tmp_path, "gamma", 'mode = "bridge"\nports = ["18080:80/udp"]')  # other protocol
    load = UnitLoader(host_checks=False).load_directory(tmp_path)
    assert set(load.specs) == {"alpha", "gamma"}
    (error,) = load.errors["beta"]
    assert error.key == "network.ports[1]" and error.line == 5
    assert error.message == '18080:8080/tcp conflicts with 18080:80/tcp of unit "alpha"'


@pytest.mark.parametrize("mode", ["none", "host"])
def test_ports_and_outbound_need_bridge_mode(tmp_path: Path, mode: str) -> None:
    write(tmp_path, "a", f'mode = "{mode}"\nports = ["8080:80"]')
    write(tmp_path, "b", f'mode = "{mode}"\noutbound = false')
    load = UnitLoader(host_checks=False).load_directory(tmp_path)
    assert [str(e.key) for e in load.errors["a"]] == ["network.ports"]
    assert 'only used with mode = "bridge"' in load.errors["a"][0].message
    assert [str(e.key) for e in load.errors["b"]] == ["network.outbound"]


def test_outbound_defaults_on_in_bridge_mode(tmp_path: Path) -> None:
    write(tmp_path, "a", 'mode = "bridge"')
    write(tmp_path, "b", 'mode = "bridge"\noutbound = false\nports = ["8080:80", "8080:80"]')
    load = UnitLoader(host_checks=False).load_directory(tmp_path)
    assert load.specs["a"].unit.network.nat_outbound is True
    (error,) = load.errors["b"]
    assert error.key == "network.ports[1]" and "overlaps ports[0]" in error.message
