"""[[listen]]: the kinds, addresses, names and where inet sockets are allowed."""

from __future__ import annotations

import pytest

from supervisor.unit.listen import held_netns_key, needs_held_netns
from supervisor.unit.loader import UnitFileError, parse_unit

HOST = '[service]\nexec = ["/bin/true"]\n[network]\nmode = "host"\n'


def names(body: str, head: str = HOST) -> list[str]:
    spec = parse_unit("/units/u.toml", "u", (head + body).encode())
    return [entry.fd_name() for entry in spec.unit.listen]


def error(body: str, head: str = HOST) -> str:
    with pytest.raises(UnitFileError) as info:
        parse_unit("/units/u.toml", "u", (head + body).encode())
    return "\n".join(str(e) for e in info.value.errors)


def test_kinds_and_default_names() -> None:
    body = (
        '[[listen]]\ntcp = 8080\n[[listen]]\ntcp = "[::1]:8081"\n[[listen]]\nudp = 5353\n'
        '[[listen]]\nunix = "/run/web.sock"\nmode = 0o600\nname = "ctl"\n'
    )
    assert names(body) == ["tcp-8080", "tcp-8081", "udp-5353", "ctl"]


@pytest.mark.parametrize("mode", ["none", "bridge", "host"])
def test_every_kind_works_in_every_network_mode(mode: str) -> None:
    head = f'[service]\nexec = ["/bin/true"]\n[network]\nmode = "{mode}"\n'
    body = '[[listen]]\nunix = "/run/web.sock"\n[[listen]]\ntcp = 8080\n[[listen]]\nudp = 53\n'
    assert names(body, head) == ["unix", "tcp-8080", "udp-53"]


def test_only_inet_sockets_outside_the_host_network_need_a_held_netns() -> None:
    def held(mode: str, body: str) -> bool:
        head = f'[service]\nexec = ["/bin/true"]\n[network]\nmode = "{mode}"\n'
        unit = parse_unit("/units/u.toml", "u", (head + body).encode()).unit
        return needs_held_netns(unit.listen, unit.network.mode)

    assert held("none", "[[listen]]\ntcp = 8080\n")
    assert held("bridge", '[[listen]]\nunix = "/run/a.sock"\n[[listen]]\nudp = 53\n')
    assert not held("host", "[[listen]]\ntcp = 8080\n")
    assert not held("bridge", '[[listen]]\nunix = "/run/a.sock"\n')
    assert not held("none", "")


def test_the_held_netns_key_follows_the_network_and_inet_sockets() -> None:
    def key(body: str) -> str:
        unit = parse_unit("/units/u.toml", "u", body.encode()).unit
        return held_netns_key(unit.listen, unit.network)

    base = '[service]\nexec = ["/bin/true"]\n[network]\nmode = "bridge"\n[[listen]]\ntcp = 80\n'
    assert key(base) == key(base.replace("/bin/true", "/bin/false"))
    assert key(base) == key(base + '[[listen]]\nunix = "/run/a.sock"\n')
    assert key(base) != key(base + "[[listen]]\nudp = 53\n")
    assert key(base) != key(base.replace('mode = "bridge"', 'mode = "none"'))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[[listen]]\n", "needs exactly one of"),
        ('[[listen]]\ntcp = 1\nunix = "/a"\n', "needs exactly one of"),
        ("[[listen]]\ntcp = 70000\n", "port 70000 is not from 1 to 65535"),
        ('[[listen]]\ntcp = "localhost:80"\n', "'localhost' is not an IP address"),
        ('[[listen]]\ntcp = "8080"\n', "an address with a port"),
        ('[[listen]]\nunix = "rel.sock"\n', "an absolute path"),
        ('[[listen]]\ntcp = 80\nowner = "www"\n', "owner is for unix sockets only"),
        ('[[listen]]\ntcp = 80\nname = "a:b"\n', "'a:b': letters"),
        ("[[listen]]\ntcp = 80\n[[listen]]\ntcp = 80\n", "'tcp-80' is used twice"),
    ],
)
def test_bad_entries_name_the_key(body: str, expected: str) -> None:
    assert expected in error(body)
