"""`ip netns add` leaves a mount behind: the first one bind-mounts /run/netns onto itself
(shared, so that namespaces it adds later show in every mount namespace) and nothing ever
unmounts it. A test or bench that adds one notes whether the mount was there before and, once
its namespace is deleted, takes the mount away again if it made it and nothing is left in it.
"""

from __future__ import annotations

import os
import subprocess

RUN_NETNS = "/run/netns"


def run_netns_mounted() -> bool:
    # Not os.path.ismount: a bind mount of a directory onto itself is on the same device as
    # its parent, which is all ismount compares. The mount table says it.
    with open("/proc/self/mountinfo") as mounts:
        return any(line.split()[4] == RUN_NETNS for line in mounts)


def unmount_run_netns(was_mounted: bool) -> None:
    """After `ip netns del`: unmount /run/netns if it was not mounted before and is empty."""
    if was_mounted or not run_netns_mounted() or os.listdir(RUN_NETNS):
        return
    subprocess.run(["umount", RUN_NETNS], capture_output=True, check=False)
