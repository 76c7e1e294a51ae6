"""Named points where the reliability tests freeze the daemon, to kill it mid-operation.

With `SANDBOXD_FAULT_STOP_AT=<point>:<unit>` in its environment, the daemon (or its image
helper) stops itself
(SIGSTOP) when it reaches that point for that unit; the test sees the stopped state in
/proc/<pid>/stat, looks at what exists at that instant (a cgroup, a veth), and SIGKILLs it. A
signal from outside could not land between two given lines; a stop from inside always does.
Unset (everywhere but those tests), a point is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "SANDBOXD_FAULT_STOP_AT"

# The points, where they are, and what exists there (the tests name them).
LAUNCH_CGROUP_CREATED = "launch.cgroup_created"  # engine/run.py: a cgroup, nothing forked
NETWORK_VETH_ATTACHED = "network.veth_attached"  # host/network.py: veth on the bridge, no go
# engine/unit_runner.py: at an OOM kill, the next run launched up to its Go in `.next.<unit>`
# (engine/prelaunch.py), the OOM-killed run's exit perhaps not seen yet.
PRELAUNCH_BEGUN = "prelaunch.begun"
# images/store.py, in the unpack helper process (it inherits the environment; the "unit" is
# the layer's diff id): the layer whole in tmp/, not yet renamed into layers/.
IMAGE_LAYER_UNPACKED = "image.layer_unpacked"


def reached(point: str, unit: str) -> None:
    if os.environ.get(ENV) == f"{point}:{unit}":
        os.kill(os.getpid(), signal.SIGSTOP)
