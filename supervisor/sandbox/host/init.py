"""`init = true`: Debian's static tini as PID 1, the service as its child (PID 2).

tini is the minimal init a PID 1 must be (as bubblewrap's do_init): it forwards the signals
it receives to the service, reaps every zombie re-parented to PID 1, and exits with the
service's status. Static, so it runs in any root (a busybox rootfs has no glibc). It is bound
read-only at `mounts.INIT_PATH`, a path no unit mount can cover.
"""

from __future__ import annotations

import os

from supervisor.sandbox.wire.mounts import INIT_PATH

TINI_CANDIDATES = ("/usr/bin/tini-static", "/usr/bin/tini-static-amd64", "/sbin/tini-static")


class InitMissing(LookupError):
    pass


def find_tini() -> str:
    """The host's static tini (package `tini`); a dynamic tini would not run in a rootfs."""
    for path in TINI_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    raise InitMissing("init = true needs tini-static on the host (apt install tini)")


def wrap(argv: list[str]) -> tuple[str, list[str]]:
    """(path to exec, argv) running `argv` under tini inside the sandbox."""
    return INIT_PATH, ["tini", "--", *argv]
