"""What `status` shows of a unit's network (SandboxNetwork.view): from the lease file, which is
read again only when it changed."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from supervisor.config import DaemonConfig
from supervisor.sandbox.host import adapters
from supervisor.sandbox.host.adapters import SandboxNetwork
from supervisor.sandbox.host.ipam import LeaseStore
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
                        "gateway": "10.88.0.1", "outbound": True, "ports": []}  # fmt: skip
    store = LeaseStore(config.data_dir / "network" / "leases.json", ipaddress.ip_network(
        "10.88.0.0/16"))  # fmt: skip
    store.acquire("web", ipaddress.IPv4Interface("10.88.0.7/16"))
    assert net.view(spec("web", "bridge")) == {
        "mode": "bridge", "address": "10.88.0.7/16", "mac": "02:5b:0a:58:00:07",
        "bridge": "sbx0", "gateway": "10.88.0.1", "outbound": True, "ports": [],
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
