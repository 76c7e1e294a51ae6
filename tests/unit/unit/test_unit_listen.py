"""[[listen]]: the kinds, addresses, names and where inet sockets are allowed."""

from __future__ import annotations

import pytest

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


def test_a_unix_socket_needs_no_host_network() -> None:
    head = '[service]\nexec = ["/bin/true"]\n'
    assert names('[[listen]]\nunix = "/run/web.sock"\n', head) == ["unix"]
    assert 'listen[0].tcp: tcp sockets need network.mode = "host"' in error(
        "[[listen]]\ntcp = 8080\n", head
    )


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
