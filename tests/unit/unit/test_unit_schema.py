from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from supervisor.unit.schema import DEFAULT_NAMESPACES, UnitFile
from supervisor.unit.spec import UnitSpec


def unit(**sections: Any) -> UnitFile:
    sections.setdefault("service", {"exec": ["/bin/true"]})
    return UnitFile.model_validate(sections)


def spec(**sections: Any) -> UnitSpec:
    return UnitSpec(name="web", path="/x/web.toml", unit=unit(**sections))


def errors(**sections: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as info:
        unit(**sections)
    return [(tuple(e["loc"]), e["msg"]) for e in info.value.errors()]


def test_defaults_are_filled_in() -> None:
    u = unit()
    assert u.service.stop_signal == "SIGTERM"
    assert u.service.stop_timeout == 10.0
    assert u.service.ready == "started"
    assert u.service.autostart is True
    assert u.sandbox.root == "host"
    assert u.sandbox.namespaces == list(DEFAULT_NAMESPACES)
    assert u.resources.pids_max == 1024  # a fork-bomb guard even when unset
    assert u.resources.memory_max is None
    assert u.restart.policy == "on-failure"
    assert u.restart.delay == 0.1
    assert u.oom.policy == "restart"
    assert u.security.capabilities is None  # DEFAULT_CAPABILITIES for root, none for others
    assert u.security.no_new_privileges is True
    assert u.health is None
    assert u.network.mode == "none"


def test_the_design_example_validates() -> None:
    u = unit(
        service={
            "exec": ["/usr/bin/python3", "-m", "http.server", "8080"],
            "env": {"LANG": "C.UTF-8"},
            "user": 1000,
            "stop_timeout": "10s",
            "ready": "notify",
            "watchdog": "0",
            "after": ["db"],
        },
        sandbox={
            "devices": [{"path": "/dev/net/tun", "access": "wr"}],
            "mounts": [
                {"source": "/srv/www", "target": "/srv", "read_only": True},
                {"type": "tmpfs", "target": "/tmp", "size": "64M"},
            ],
        },
        resources={"memory_max": "256M", "memory_high": "200M", "swap_max": "0", "cpus": "0-1"},
        health={"http": "http://127.0.0.1:8080/", "interval": "10s"},
        network={"mode": "bridge", "address": "10.88.0.10/16"},
    )
    assert u.service.user == "1000"
    assert u.sandbox.devices[0].access == "rw"
    assert u.sandbox.mounts[0].type == "bind"
    assert u.resources.memory_max == 256 << 20
    assert u.resources.swap_max == 0


def test_hash_ignores_spelling_and_order() -> None:
    a = spec(resources={"memory_max": "65536K", "cpu_weight": 50}, restart={"delay": "1000ms"})
    b = spec(restart={"delay": "1s"}, resources={"cpu_weight": 50, "memory_max": "64M"})
    assert a.hash == b.hash
    assert spec(security={"capabilities": ["KILL", "cap_chown"]}).hash == (
        spec(security={"capabilities": ["CHOWN", "KILL", "KILL"]}).hash
    )


def test_resource_changes_keep_the_restart_hash() -> None:
    base = spec()
    live = spec(resources={"memory_max": "64M"})
    changed = spec(service={"exec": ["/bin/false"]})
    assert live.hash != base.hash and live.restart_hash == base.restart_hash
    assert changed.restart_hash != base.restart_hash


@pytest.mark.parametrize("name", ["../x", "a b", "x" * 64, ".hidden", ""])
def test_after_names_must_be_safe(name: str) -> None:
    [(loc, _)] = errors(service={"exec": ["/bin/true"], "after": [name]})
    assert loc == ("service", "after", 0)


def test_network_host_drops_the_net_namespace() -> None:
    assert "net" not in unit(network={"mode": "host"}).sandbox.namespaces


def test_network_host_conflicts_with_an_explicit_net_namespace() -> None:
    [(loc, msg)] = errors(network={"mode": "host"}, sandbox={"namespaces": ["pid", "mount", "net"]})
    assert loc == ()  # a model-level check; the loader adds the key from ctx
    assert msg == 'lists "net" but network.mode is "host"'


def test_a_private_network_needs_the_net_namespace() -> None:
    [(_, msg)] = errors(sandbox={"namespaces": ["pid", "mount"]})
    assert msg == 'network.mode = "none" needs the "net" namespace here'


def test_a_wrong_sandbox_type_is_reported_as_such() -> None:
    [(loc, _)] = errors(sandbox=5, network={"mode": "host"})
    assert loc == ("sandbox",)


@pytest.mark.parametrize(
    ("sections", "loc"),
    [
        ({"sandbox": {"root": "relative"}}, ("sandbox", "root")),
        ({"sandbox": {"root": "/"}}, ("sandbox", "root")),
        ({"sandbox": {"namespaces": ["mount", "net"]}}, ("sandbox", "namespaces")),
        ({"sandbox": {"devices": [{"path": "/etc/passwd"}]}}, ("sandbox", "devices", 0, "path")),
        ({"sandbox": {"mounts": [{"source": "/a", "target": "/"}]}}, ("sandbox", "mounts")),
        ({"resources": {"memory_max": "1M"}}, ("resources", "memory_max")),
        ({"resources": {"cpus": "3-1"}}, ("resources", "cpus")),
        ({"resources": {"cpu_max": 0}}, ("resources", "cpu_max")),
        ({"health": {"tcp": 80, "http": "http://x/"}}, ("health",)),
        ({"network": {"address": "10.0.0.1/8"}}, ("network",)),
        ({"network": {"mode": "bridge", "address": "10.0.0.1"}}, ("network", "address")),
        ({"network": {"mode": "bridge", "address6": "fd00::10"}}, ("network", "address6")),
        ({"network": {"mode": "bridge", "address6": "10.0.0.1/8"}}, ("network", "address6")),
        ({"network": {"address6": "fd00::10/64"}}, ("network",)),
        ({"network": {"mode": "bridge", "dns": ["dns.example"]}}, ("network", "dns")),
        ({"network": {"mode": "bridge", "dns": ["fe80::1%eth0"]}}, ("network", "dns")),
        ({"network": {"mode": "bridge", "dns": []}}, ("network", "dns")),
        ({"network": {"mode": "bridge", "dns": ["192.0.2.1"] * 4}}, ("network", "dns")),
        ({"network": {"mode": "bridge", "dns_search": ["a b"]}}, ("network", "dns_search")),
        ({"service": {"exec": ["/bin/true"], "user": "a b"}}, ("service", "user")),
        ({"service": {"exec": ["/bin/true"], "env": {"A=B": "x"}}}, ("service", "env")),
        ({"service": {"exec": ["/bin/true"], "workdir": "tmp"}}, ("service", "workdir")),
    ],
)
def test_rejects(sections: dict[str, Any], loc: tuple[str | int, ...]) -> None:
    assert [loc] == [e[0] for e in errors(**sections)]


def test_dns_keys_parse_and_normalise() -> None:
    net = unit(network={"mode": "bridge", "dns": ["192.0.2.53", "2001:DB8::53"],
                        "dns_search": ["example.internal", "corp.example."]}).network  # fmt: skip
    assert net.dns == ["192.0.2.53", "2001:db8::53"]
    assert net.dns_search == ["example.internal", "corp.example."]
    assert unit(network={"mode": "bridge"}).network.dns is None


@pytest.mark.parametrize("key", ["dns", "dns_search"])
def test_dns_keys_need_bridge_mode_and_a_host_root(key: str) -> None:
    value = ["192.0.2.53"] if key == "dns" else ["example.internal"]
    [(loc, msg)] = errors(network={"mode": "none", key: value})
    assert loc == ("network",) and 'only used with mode = "bridge"' in msg
    [(loc, msg)] = errors(network={"mode": "host", key: value})
    assert "sees the host's own /etc/resolv.conf" in msg
    [(loc, msg)] = errors(network={"mode": "bridge", key: value}, sandbox={"root": "/srv/rootfs"})
    assert 'needs root = "host" or an image' in msg and "keeps its own /etc/resolv.conf" in msg


def test_address6_parses_and_normalises() -> None:
    net = unit(network={"mode": "bridge", "address6": "FD00:88:0::10/64"}).network
    assert net.address6 == "fd00:88::10/64"


def test_service_output_overrides_the_daemons_or_leaves_it() -> None:
    assert unit().service.output is None  # the daemon config's `output`
    assert unit(service={"exec": ["/bin/true"], "output": "journal"}).service.output == "journal"
    [(loc, msg)] = errors(service={"exec": ["/bin/true"], "output": "syslog"})
    assert loc == ("service", "output")
    assert "'file', 'journal' or 'both'" in msg


USERNS = ["pid", "mount", "net", "user"]


def test_idmap_host_on_a_bind_in_a_user_namespace() -> None:
    u = unit(
        sandbox={
            "namespaces": USERNS,
            "mounts": [{"source": "/srv", "target": "/srv", "idmap": "host", "read_only": False}],
        }
    )
    assert u.sandbox.mounts[0].type == "bind" and u.sandbox.mounts[0].idmap == "host"
    assert (
        unit(sandbox={"mounts": [{"source": "/a", "target": "/a"}]}).sandbox.mounts[0].idmap is None
    )


@pytest.mark.parametrize(
    ("sandbox", "needle"),
    [
        (
            {
                "user_namespace": "host",
                "mounts": [{"source": "/a", "target": "/a", "idmap": "host"}],
            },
            "needs a user namespace",
        ),
        (
            {"namespaces": USERNS, "mounts": [{"type": "tmpfs", "target": "/a", "idmap": "host"}]},
            "only a bind mount can be idmapped",
        ),
        (
            {"namespaces": USERNS, "mounts": [{"source": "/a", "target": "/a", "idmap": "yes"}]},
            "'host'",
        ),
    ],
)
def test_idmap_is_refused_naming_the_key(sandbox: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        unit(sandbox=sandbox)
    (error,) = info.value.errors()
    # The key the loader names (`sandbox.mounts[0].idmap`): in the location, or in ctx for a
    # check of the whole [sandbox] table.
    key = ".".join(str(p) for p in error["loc"]) + "." + error.get("ctx", {}).get("key", "")
    assert "mounts" in key and "idmap" in key and needle in error["msg"], error
