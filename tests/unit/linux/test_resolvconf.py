"""A bridge sandbox's resolv.conf from made-up host files (never the real /etc/resolv.conf)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor.linux import resolvconf
from supervisor.linux.resolvconf import Resolver

STUB = """# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).
nameserver 127.0.0.53
options edns0 trust-ad
search corp.example
"""
UPSTREAM = """# This is /run/systemd/resolve/resolv.conf managed by man:systemd-resolved(8).
nameserver 192.0.2.1
nameserver 2001:db8::1
search corp.example lab.example
"""


def files(tmp_path: Path, host: str | None, upstream: str | None = None) -> dict[str, str]:
    paths = {"host_path": str(tmp_path / "resolv.conf"), "upstream_path": str(tmp_path / "up")}
    if host is not None:
        Path(paths["host_path"]).write_text(host)
    if upstream is not None:
        Path(paths["upstream_path"]).write_text(upstream)
    return paths


def test_parse_keeps_servers_search_and_options() -> None:
    text = "; comment\nnameserver 192.0.2.1\nnameserver bogus\ndomain a.example\n"
    text += "search b.example c.example\noptions ndots:2\noptions ndots:2 rotate\n"
    assert resolvconf.parse(text) == Resolver(
        ("192.0.2.1",), ("b.example", "c.example"), ("ndots:2", "rotate")
    )


@pytest.mark.parametrize(
    ("server", "ok"),
    [("127.0.0.53", False), ("127.1.2.3", False), ("::1", False), ("fe80::1%eth0", False),
     ("169.254.169.253", False), ("192.0.2.1", True), ("2001:db8::1", True)],
)  # fmt: skip
def test_loopback_and_link_local_servers_are_unreachable(server: str, ok: bool) -> None:
    assert resolvconf.reachable(server) is ok


def test_a_plain_host_file_is_kept_without_loopback_servers(tmp_path: Path) -> None:
    host = "nameserver 127.0.0.1\nnameserver 198.51.100.7\nsearch x.example\noptions rotate\n"
    got = resolvconf.for_sandbox(None, None, **files(tmp_path, host))
    assert got.warning is None
    lines = got.content.decode().splitlines()
    assert lines[0].startswith("# Written by sandboxd")
    assert lines[1:] == ["search x.example", "nameserver 198.51.100.7", "options rotate"]


def test_the_systemd_resolved_stub_is_replaced_by_its_upstream_servers(tmp_path: Path) -> None:
    got = resolvconf.for_sandbox(None, None, **files(tmp_path, STUB, UPSTREAM))
    assert got.warning is None
    assert "/up (the upstream servers of the stub 127.0.0.53)" in got.source
    assert got.content.decode().splitlines()[1:] == [
        "search corp.example",  # the host file's own search list wins
        "nameserver 192.0.2.1",
        "nameserver 2001:db8::1",
        "options edns0 trust-ad",
    ]


def test_upstream_search_is_used_when_the_host_file_has_none(tmp_path: Path) -> None:
    host = "nameserver 127.0.0.53\n"
    got = resolvconf.for_sandbox(None, None, **files(tmp_path, host, UPSTREAM))
    assert "search corp.example lab.example\n" in got.content.decode()


@pytest.mark.parametrize(
    ("host", "upstream"),
    [("nameserver 127.0.0.1\nsearch x\n", None),  # a local dnsmasq
     (STUB, None),  # resolved's upstream file is missing
     (STUB, "nameserver 127.0.0.1\n"),  # resolved forwards to a local server
     (None, None)],  # no host file at all
)  # fmt: skip
def test_no_reachable_server_gives_none_and_a_warning(
    tmp_path: Path, host: str | None, upstream: str | None
) -> None:
    got = resolvconf.for_sandbox(None, None, **files(tmp_path, host, upstream))
    assert got.warning is not None and "set network.dns" in got.warning
    assert not [line for line in got.content.splitlines() if line.startswith(b"nameserver")]
    assert b"8.8.8.8" not in got.content  # never an invented public resolver


def test_unit_dns_replaces_the_servers_and_keeps_the_host_search(tmp_path: Path) -> None:
    host = "nameserver 127.0.0.53\nsearch h.example\noptions edns0\n"
    got = resolvconf.for_sandbox(["192.0.2.53", "2001:db8::53"], None, **files(tmp_path, host))
    assert got.warning is None and got.source == "the unit's network.dns"
    assert got.content.decode().splitlines()[1:] == [
        "search h.example",
        "nameserver 192.0.2.53",
        "nameserver 2001:db8::53",
        "options edns0",
    ]


def test_dns_search_replaces_the_host_search(tmp_path: Path) -> None:
    host = "nameserver 198.51.100.7\nsearch h.example\n"
    got = resolvconf.for_sandbox(["192.0.2.53"], ["example.internal"], **files(tmp_path, host))
    assert "search example.internal\n" in got.content.decode()
    assert "h.example" not in got.content.decode()
    empty = resolvconf.for_sandbox(None, [], **files(tmp_path, host))
    assert empty.content.decode().splitlines()[1:] == ["nameserver 198.51.100.7"]


def test_a_changed_host_file_is_read_again(tmp_path: Path) -> None:
    paths = files(tmp_path, "nameserver 198.51.100.7\n")
    assert b"198.51.100.7" in resolvconf.for_sandbox(None, None, **paths).content
    # Replaced as resolvconf(8) or systemd-resolved do: a new file renamed over the old.
    new = tmp_path / "new"
    new.write_text("nameserver 198.51.100.8\n")
    os.rename(new, paths["host_path"])
    assert b"198.51.100.8" in resolvconf.for_sandbox(None, None, **paths).content
