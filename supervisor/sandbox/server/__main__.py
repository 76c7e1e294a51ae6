"""The fork server process: `python -S -m supervisor.sandbox.server FD DAEMON_PID [HOLDER]`.

Spawned by the daemon (host/forkserver.py), never imported by it. FD is the daemon's end of
a Unix socket pair; the loop is serverloop.py. HOLDER, if given, is `fd:dev:ino`: the daemon's
user-namespace holder root (linux/syscalls.py HolderRoot), inherited, handed to each launcher.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys

from supervisor.linux import heap
from supervisor.linux.syscalls import PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, REAL, HolderRoot
from supervisor.sandbox.server.serverloop import serve


def main(argv: list[str] | None = None) -> int:
    args = argv or sys.argv[1:]
    fd, daemon = int(args[0]), int(args[1])
    holder = None
    if len(args) > 2:
        holder = HolderRoot(*(int(n) for n in args[2].split(":")))
        os.set_inheritable(holder.fd, False)  # never an exec probe command's
    # Die with the daemon: a server outliving it would keep forking for nobody. getppid() after
    # arming catches a daemon that died before.
    REAL.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != daemon:
        return 1
    # Orphaned sandbox PID 1s must go to the daemon, never to us (prctl(2): not inherited, but
    # cleared explicitly in case the interpreter was started by a subreaper-aware wrapper).
    REAL.prctl(PR_SET_CHILD_SUBREAPER, 0)
    # No collection, ever: a forked launcher must not run finalizers, and the server allocates
    # next to nothing.
    gc.disable()
    # The imports' freed temporaries (source reads, unmarshal buffers) sit below live objects
    # in the C heap, resident: every fork copies their page table entries and every launcher's
    # exit (and PID 1's exec) unmaps them again. ~0.7 MB of ~9 MB anonymous memory.
    heap.trim()
    # Close-on-exec like every other fd here: exec probe commands are forked by this process.
    os.set_inheritable(fd, False)
    return serve(socket.socket(fileno=fd), holder=holder)


if __name__ == "__main__":
    sys.exit(main())
