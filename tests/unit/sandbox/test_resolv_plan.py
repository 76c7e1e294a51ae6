"""Which sandboxes get a planned /etc/resolv.conf, and what the daemon logs about it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from supervisor.config import DaemonConfig
from supervisor.linux import resolvconf
from supervisor.sandbox.host.adapters import SandboxNetwork
from supervisor.sandbox.host.launch import LaunchRequest, root_spec
from tests.support import harness


def spec(**network: Any) -> Any:
    return harness.unit(["/bin/true"], network=network)


def test_a_bridge_unit_with_a_host_root_gets_its_resolv_conf() -> None:
    req = LaunchRequest(spec(mode="bridge", dns=["192.0.2.53"]), [], 1, 2)
    content = root_spec(req, None).resolv_conf
    assert content is not None and b"\nnameserver 192.0.2.53\n" in content
    given = LaunchRequest(spec(mode="bridge"), [], 1, 2, resolv_conf=b"nameserver 192.0.2.9\n")
    assert root_spec(given, None).resolv_conf == b"nameserver 192.0.2.9\n"


def test_a_bridge_unit_with_an_image_gets_its_resolv_conf_and_a_root_directory_does_not(
    tmp_path: Path,
) -> None:
    image = harness.unit(["/bin/true"], network={"mode": "bridge", "dns": ["192.0.2.53"]},
                         sandbox={"image": "/var/lib/images/busybox:1"})  # fmt: skip
    req = LaunchRequest(image, [], 1, 2, image_layers=("/layers/a",))
    content = root_spec(req, None).resolv_conf
    assert content is not None and b"\nnameserver 192.0.2.53\n" in content
    net = SandboxNetwork(DaemonConfig.model_validate({"data_dir": str(tmp_path)}))
    assert net.resolv_conf(image) == content
    directory = harness.unit(["/bin/true"], network={"mode": "bridge"},
                             sandbox={"root": str(tmp_path)})  # fmt: skip
    given = LaunchRequest(directory, [], 1, 2, resolv_conf=b"nameserver 192.0.2.9\n")
    assert root_spec(given, None).resolv_conf is None
    assert net.resolv_conf(directory) is None


@pytest.mark.parametrize("mode", ["none", "host"])
def test_other_modes_keep_the_hosts_file(mode: str) -> None:
    assert root_spec(LaunchRequest(spec(mode=mode), [], 1, 2), None).resolv_conf is None


def test_a_missing_nameserver_is_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 127.0.0.1\n")
    real = resolvconf.for_sandbox

    def fake(dns: Any, search: Any, **_: Any) -> resolvconf.SandboxResolv:
        return real(dns, search, host_path=str(host), upstream_path=str(tmp_path / "none"))

    monkeypatch.setattr(resolvconf, "for_sandbox", fake)
    net = SandboxNetwork(DaemonConfig.model_validate({"data_dir": str(tmp_path)}))
    bridge = spec(mode="bridge")
    with capture_logs() as logs:
        for _ in range(3):
            content = net.resolv_conf(bridge)
            assert content is not None and b"nameserver" not in content.split(b"\n", 1)[1]
        host.write_text("nameserver 198.51.100.7\n")
        assert net.resolv_conf(bridge) is not None
    assert [e["event"] for e in logs] == ["unit.network_no_dns"]
    assert "set network.dns" in logs[0]["warning"]
    assert net.resolv_conf(spec(mode="none")) is None
