"""The parts of the network manager that need no kernel: names, plans, no-op modes."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from pathlib import Path

import pytest

from supervisor.config import DaemonConfig
from supervisor.errors import NetworkError
from supervisor.sandbox.host.ipam import mac_for
from supervisor.sandbox.host.network import NetworkManager, veth_name
from supervisor.unit.schema import Network


def manager(tmp_path: Path, subnet: str = "10.201.9.0/24") -> NetworkManager:
    config = DaemonConfig.model_validate(
        {"data_dir": str(tmp_path), "network": {"bridge": "sbxt-unit", "subnet": subnet}}
    )
    return NetworkManager(config)


def test_veth_names_fit_ifnamsiz_and_differ() -> None:
    names = {veth_name("sbx0", f"unit-{i}") for i in range(1000)}
    assert len(names) == 1000
    longest = "x" * 63
    assert re.fullmatch(r"sbx[0-9a-f]{12}", veth_name("sbx0", longest))
    # Another daemon (another bridge) never picks the same name for the same unit.
    assert veth_name("sbx0", "web") != veth_name("sbxt1", "web")


def test_macs_follow_the_address_and_are_local_unicast() -> None:
    mac = mac_for(ipaddress.IPv4Address("10.88.1.2"))
    assert mac == "02:5b:0a:58:01:02"
    first = int(mac.split(":")[0], 16)
    assert first & 0x01 == 0  # unicast
    assert first & 0x02 == 2  # locally administered


@pytest.mark.parametrize("mode", ["none", "host"])
def test_none_and_host_need_no_kernel_work(tmp_path: Path, mode: str) -> None:
    net = manager(tmp_path)

    async def go() -> None:
        plan = await net.prepare("web", Network(mode=mode))  # type: ignore[arg-type]
        assert plan.mode == mode
        assert plan.to_json() == {
            "mode": mode,
            "bridge": None,
            "host_veth": None,
            "address": None,
            "gateway": None,
            "address6": None,
            "gateway6": None,
        }
        await net.attach(plan, pid=1)  # nothing to attach: pid is not even looked at

    asyncio.run(go())
    assert not (tmp_path / "network").exists()  # no lease for a non-bridge unit


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("10.202.0.10/24", "outside the daemon's subnet"),
        ("10.201.9.1/24", "the bridge's own address"),
    ],
)
def test_bad_static_address_fails_before_any_netlink(
    tmp_path: Path, address: str, message: str
) -> None:
    net = manager(tmp_path)
    with pytest.raises(NetworkError, match=message):
        asyncio.run(net.prepare("web", Network(mode="bridge", address=address)))
    assert not (tmp_path / "network").exists()


def test_address6_needs_the_daemons_subnet6_and_fits_it(tmp_path: Path) -> None:
    net = manager(tmp_path)
    assert net.subnet6 is None and net.leases6 is None  # IPv4 only unless configured
    with pytest.raises(NetworkError, match=r"set network\.subnet6 in the daemon config"):
        asyncio.run(net.prepare("web", Network(mode="bridge", address6="fd00:88::10/64")))
    config = DaemonConfig.model_validate(
        {"data_dir": str(tmp_path), "network": {"bridge": "sbxt-unit", "subnet6": "fd00:88::/64"}}
    )
    with pytest.raises(NetworkError, match="outside the daemon's subnet6"):
        asyncio.run(
            NetworkManager(config).prepare("web", Network(mode="bridge", address6="fd00:1::9/64"))
        )
    assert not (tmp_path / "network").exists()
