"""What `status` shows of a unit's network (SandboxNetwork.view): from the lease file, which is
read again only when it changed."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from supervisor.config import DaemonConfig
from supervisor.sandbox.host import adapters
from supervisor.sandbox.host.adapters import SandboxNetwork
from supervisor.sandbox.host.ipam import Lease6Store, LeaseStore
from supervisor.unit.schema import UnitFile
from supervisor.unit.spec import UnitSpec


def spec(name: str, mode: str) -> UnitSpec:
    data = {"service": {"exec": ["/bin/true"]}, "network": {"mode": mode}}
    return UnitSpec(name, f"/units/{name}.toml", UnitFile.model_validate(data))


def test_view_shows_the_leased_address_and_rereads_only_a_changed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = DaemonConfig(data_dir=tmp_path / "data")
    net = SandboxNetwork(config)
    assert net.view(spec("web", "none")) == {"mode": "none"}
    assert net.view(spec("web", "host")) == {"mode": "host"}
    unleased = net.view(spec("web", "bridge"))
    assert unleased == {"mode": "bridge", "address": None, "mac": None, "bridge": "sbx0",
                        "gateway": "10.88.0.1"}  # fmt: skip
    store = LeaseStore(config.data_dir / "network" / "leases.json", ipaddress.ip_network(
        "10.88.0.0/16"))  # fmt: skip
    store.acquire("web", ipaddress.IPv4Interface("10.88.0.7/16"))
    assert net.view(spec("web", "bridge")) == {
        "mode": "bridge", "address": "10.88.0.7/16", "mac": "02:5b:0a:58:00:07",
        "bridge": "sbx0", "gateway": "10.88.0.1",
    }  # fmt: skip
    reads = []
    real = adapters.ipam.LeaseStore.leases

    def counted(self: LeaseStore) -> dict[str, ipaddress.IPv4Address]:
        reads.append(1)
        return real(self)

    monkeypatch.setattr(adapters.ipam.LeaseStore, "leases", counted)
    for _ in range(100):
        net.view(spec("web", "bridge"))
    assert reads == [], "an unchanged lease file is not read again"
    store.release("web")
    assert net.view(spec("web", "bridge"))["address"] is None
    assert reads == [1]


def test_view_shows_the_ipv6_lease_only_with_subnet6(tmp_path: Path) -> None:
    data = tmp_path / "data"
    plain = SandboxNetwork(DaemonConfig(data_dir=data))
    assert "address6" not in plain.view(spec("web", "bridge"))
    config = DaemonConfig.model_validate(
        {"data_dir": str(data), "network": {"subnet6": "fd00:88::/64"}}
    )
    net = SandboxNetwork(config)
    view = net.view(spec("web", "bridge"))
    assert (view["address6"], view["gateway6"]) == (None, "fd00:88::1")
    store = Lease6Store(data / "network" / "leases6.json", ipaddress.IPv6Network("fd00:88::/64"))
    store.acquire("web")
    assert net.view(spec("web", "bridge"))["address6"] == "fd00:88::2/64"
    assert net.view(spec("web", "none")) == {"mode": "none"}
