"""The fork server's import set: never threading nor platform, nor anything of the daemon's
(issue 23, the launch's time and the fork server's heap).

An imported threading registers an after-fork hook that runs Python code in every forked
child: in the server's children, that is every sandbox's launcher and PID 1, where each page
the hook touches is a copy-on-write fault on the launch's path (~100 more faults per fork).
platform only added ~0.3 MB to the heap every fork copies the page tables of (its one use,
the machine's name, is os.uname()'s). Checked in a fresh `python -S` importing what the
server's entry point imports, as host/forkserver.py starts it.

Every module the server imports is heap that each spare's fork copies the page tables of and
each exit tears down (a fork of the server costs its parent about twice a bare interpreter's):
its supervisor modules are pinned, and nothing outside the standard library may come in.
"""

from __future__ import annotations

import os
import subprocess
import sys

import supervisor
from supervisor.sandbox.child import enter

PROBE = """
import sys
import supervisor.sandbox.server.__main__
print(sorted({"threading", "platform"} & set(sys.modules)))
"""


# What the server, its launchers and their PID 1s run: a new module here is one more for
# every fork to copy; the daemon's own (engine, api, config, cgroups, ...) must never be.
SERVER_MODULES = {
    "supervisor",
    "supervisor.linux",
    "supervisor.linux.caps",
    "supervisor.linux.heap",
    "supervisor.linux.mountinfo",
    "supervisor.linux.nsclone",
    "supervisor.linux.proc_cgroup",
    "supervisor.linux.seccomp",
    "supervisor.linux.syscalls",
    "supervisor.linux.users",
    "supervisor.sandbox",
    "supervisor.sandbox.child",
    "supervisor.sandbox.child.credentials",
    "supervisor.sandbox.child.enter",
    "supervisor.sandbox.child.holding",
    "supervisor.sandbox.child.privileges",
    "supervisor.sandbox.child.rootfs",
    "supervisor.sandbox.child.stage",
    "supervisor.sandbox.server",
    "supervisor.sandbox.server.__main__",
    "supervisor.sandbox.server.probe_run",
    "supervisor.sandbox.server.serverloop",
    "supervisor.sandbox.wire",
    "supervisor.sandbox.wire.frames",
    "supervisor.sandbox.wire.mounts",
    "supervisor.sandbox.wire.plancodec",
    "supervisor.sandbox.wire.protocol",
}
# The daemon's, of the standard library: an event loop, logging or subprocess in the server
# would be megabytes of heap (and threading an after-fork hook) in every launcher.
DAEMON_STDLIB = {"asyncio", "logging", "subprocess", "threading", "platform", "concurrent"}


def _server_modules(probe: str) -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(supervisor.__file__)))
    out = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        env={**os.environ, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_the_fork_server_imports_neither_threading_nor_platform() -> None:
    assert _server_modules(PROBE) == "[]"


def test_the_fork_server_imports_its_own_modules_and_the_standard_library_only() -> None:
    """pydantic, structlog, aiohttp (the daemon's) or any other third-party module, a daemon
    module of the package or of the standard library: none is in the server's sys.modules."""
    listed = _server_modules(
        "import sys\nimport supervisor.sandbox.server.__main__\nprint('\\n'.join(sys.modules))"
    ).splitlines()
    tops = {name.split(".")[0] for name in listed if name != "__main__"}
    assert tops - sys.stdlib_module_names == {"supervisor"}
    assert {n for n in listed if n.startswith("supervisor")} == SERVER_MODULES
    assert not tops & DAEMON_STDLIB


def test_enter_still_counts_threads_where_threading_is_loaded() -> None:
    import threading  # noqa: PLC0415  (pytest has it loaded anyway)

    started = threading.Event()
    done = threading.Event()

    def wait() -> None:
        started.set()
        done.wait()

    worker = threading.Thread(target=wait)
    worker.start()
    try:
        started.wait()
        assert enter._threads() == threading.active_count() >= 2
    finally:
        done.set()
        worker.join()
