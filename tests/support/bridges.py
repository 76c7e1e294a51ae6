"""A test daemon's own bridge, removed with everything a daemon makes for it.

A daemon leaves its bridge and its anti-spoofing table (`table bridge sandboxd-<bridge>`) on
exit, since sandboxes may outlive it, and removes its NAT table (`table ip sandboxd-<bridge>`)
with its last NAT unit. A daemon killed by a failing test's teardown never gets that far, so a
test removes all three. Each may be gone already, so none of these checks its outcome.
"""

from __future__ import annotations

import subprocess

from supervisor.sandbox.host import antispoof, nat


def remove_bridge(bridge: str) -> None:
    """Delete `bridge`, its anti-spoofing table and its NAT table, whichever exist."""
    subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
    for family, table in (("bridge", antispoof.table_name(bridge)),
                          ("ip", nat.table_name(bridge))):  # fmt: skip
        subprocess.run(["nft", "delete", "table", family, table], capture_output=True,
                       check=False)  # fmt: skip
