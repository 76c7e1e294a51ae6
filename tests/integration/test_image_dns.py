"""DNS in a bridge-mode image sandbox, through a real daemon (issue 21 follow-up).

The busybox image has no /etc/resolv.conf of its own; sandboxd writes the unit's `dns` and
`dns_search` into the sandbox's upper layer, as for a host root. The nameserver is
test_network_dns's tiny UDP responder on the test bridge's gateway address, so no real
resolver is ever asked; busybox's nslookup reads the nameserver from /etc/resolv.conf.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_daemon_network import Net, net
from test_network_dns import ANSWER, responder

from tests.support.daemon_kit import wait_for
from tests.support.images import build_busybox, requires_image_tools
from tests.support.requires import requires_root

__all__ = ["net"]  # a fixture, imported for pytest
pytestmark = [pytest.mark.root, requires_root, requires_image_tools]

# Asks again until the responder (started once the bridge exists) answers: nslookup fails
# fast on an unreachable port, and the test waits on "resolved", not on time.
LOOKUP = (
    "cat /etc/resolv.conf; "
    f"until /bin/busybox nslookup -type=a web.example.internal 2>&1 | grep -q {ANSWER}; "
    "do sleep 0.2; done; echo resolved; exec sleep 1000"
)


def _has_address(bridge: str, address: str) -> bool:
    shown = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", bridge],
                           capture_output=True, text=True, check=False).stdout  # fmt: skip
    return f" {address}/" in shown


def test_a_bridge_mode_image_sandbox_resolves_through_its_resolv_conf(
    net: Net, tmp_path: Path
) -> None:
    ref = build_busybox(tmp_path / "busybox")
    gateway = net.prefix + "1"
    net.daemon.write_unit("img", f"""
[service]
exec = ["/bin/sh", "-c", "{LOOKUP}"]
stop_timeout = "500ms"
[sandbox]
image = "{ref}"
[network]
mode = "bridge"
dns = ["{gateway}"]
dns_search = ["example.internal"]
""")  # fmt: skip
    net.daemon.start()
    wait_for(lambda: _has_address(net.bridge, gateway), 60)
    with responder(gateway) as dns:
        wait_for(lambda: "resolved" in net.daemon.output("img"), 60,
                 lambda: net.daemon.output("img"))  # fmt: skip
        dns.kill()
        asked, _ = dns.communicate()
    out = net.daemon.output("img")
    assert f"\nnameserver {gateway}\n" in out and "\nsearch example.internal\n" in out
    assert "asked web.example.internal 1" in asked
    assert net.daemon.stop() == 0
