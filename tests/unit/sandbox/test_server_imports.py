"""The fork server never imports threading nor platform (issue 23, the launch's time).

An imported threading registers an after-fork hook that runs Python code in every forked
child: in the server's children, that is every sandbox's launcher and PID 1, where each page
the hook touches is a copy-on-write fault on the launch's path (~100 more faults per fork).
platform only added ~0.3 MB to the heap every fork copies the page tables of (its one use,
the machine's name, is os.uname()'s). Checked in a fresh `python -S` importing what the
server's entry point imports, as host/forkserver.py starts it.
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


def test_the_fork_server_imports_neither_threading_nor_platform() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(supervisor.__file__)))
    out = subprocess.run(
        [sys.executable, "-S", "-c", PROBE],
        env={**os.environ, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]", out.stderr


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
