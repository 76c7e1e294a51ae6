"""A test daemon's own bridge, removed with everything a daemon makes for it.

A daemon leaves its bridge and its anti-spoofing table (`table bridge sandboxd-<bridge>`) on
exit, since sandboxes may outlive it, and removes its NAT table (`table ip sandboxd-<bridge>`)
with its last NAT unit. A daemon killed by a failing test's teardown never gets that far, so a
test removes all three. Each may be gone already, so none of these checks its outcome.
"""

from __future__ import annotations

import os
import subprocess

from supervisor.sandbox.host import antispoof, nat


def remove_bridge(bridge: str) -> None:
    """Delete `bridge`, its anti-spoofing table and its NAT table, whichever exist."""
    subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
    for family, table in (("bridge", antispoof.table_name(bridge)),
                          ("ip", nat.table_name(bridge))):  # fmt: skip
        subprocess.run(["nft", "delete", "table", family, table], capture_output=True,
                       check=False)  # fmt: skip


def free_prefix(net: str = "10.201", salt: int = 0) -> str:
    """The first three octets and a dot ("10.201.77.") of a /24 of `net` (third octet 60 to
    249) that no host interface has an address in: a test daemon's bridge subnet, apart from a
    real daemon's and, by the pid in the starting point, from another test process's. `salt`
    moves the starting point for a suite that may pick while another's bridge is not up yet."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    for i in range(190):
        n = (i + os.getpid() + salt) % 190 + 60
        if f" {net}.{n}." not in used:
            return f"{net}.{n}."
    raise AssertionError(f"no free {net}.x.0/24 on this host")
