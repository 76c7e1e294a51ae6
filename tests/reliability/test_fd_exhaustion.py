"""File-descriptor exhaustion (issue 29), for real: a daemon started under
`prlimit --nofile=64:64` (the daemon raises its soft limit to the hard one, and says so).

With more units than its fds can hold, the launches that do not fit fail with
`launch-error:resources: too many open files ...` and wait in backoff, while the running
units and the API go on; with the API's own accept() out of fds (idle clients hold them all),
the daemon warns once, retries about once a second rather than spinning, and answers as soon
as the clients go; with units removed, the waiting ones start.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.kit import cgroup_version, pid_alive, uname, unit_text, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]

LIMIT = 64
RESOURCES = "launch-error:resources: too many open files (EMFILE: "


def sleeper(daemon: Any, name: str) -> str:
    # Retried quickly and never given up on: the test waits for fds, not for the start limit.
    return unit_text(["/bin/sleep", "100000"], daemon, name,
                     restart={"delay": "100ms", "max_delay": "500ms", "burst": 10000})  # fmt: skip


def starved(unit: dict[str, Any]) -> bool:
    return unit["state"] == "backoff" and str(unit["last_exit"]).startswith(RESOURCES)


def client(daemon: Any) -> socket.socket:
    """A connection that asks for one small static document, then stays open (keep-alive)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(daemon.socket))  # queued by the kernel even while not accepted
    sock.sendall(b"GET /v1/openapi.json HTTP/1.1\r\nHost: sandboxd\r\n\r\n")
    sock.setblocking(False)
    return sock


def answered(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


@contextlib.contextmanager
def idle_clients(daemon: Any) -> Iterator[list[socket.socket]]:
    """Client connections, closed at the end (each holds one of the daemon's fds once
    accepted)."""
    held: list[socket.socket] = []
    try:
        yield held
    finally:
        for sock in held:
            sock.close()


def test_fd_exhaustion_fails_one_operation_at_a_time_and_recovers(
    rdaemons: Callable[[], Any],
) -> None:
    daemon = rdaemons()
    daemon.start(wrapper=["prlimit", f"--nofile={LIMIT}:{LIMIT}", "--"])
    [nofile] = daemon.events("daemon.nofile")
    assert nofile["limit"] == LIMIT

    # About 4 fds per running unit and 24 kept free: 16 units cannot all run in 64.
    names = [uname(daemon, f"u{i:02d}") for i in range(16)]
    for name in names:
        daemon.write_unit(name, sleeper(daemon, name))
    daemon.signal(1)  # SIGHUP: reload

    def settled() -> bool:
        units = daemon.status()
        return len(units) == len(names) and all(
            u["state"] == "running" or starved(u) for u in units.values()
        )

    wait_for(settled, 120, lambda: f"{daemon.status()}")
    units = daemon.status()
    running = sorted(n for n, u in units.items() if u["state"] == "running")
    waiting = sorted(n for n, u in units.items() if starved(u))
    assert running and waiting, units
    pids = {n: units[n]["pid"] for n in running}
    assert "raise LimitNOFILE= or run fewer units" in units[waiting[0]]["last_exit"]
    assert daemon.unit(running[0])["state"] == "running"  # the API answers meanwhile

    # The API's accept() out of fds: idle clients take every fd the daemon has left.
    began = time.monotonic()
    with idle_clients(daemon) as held:
        while not daemon.events("api.accept_paused"):
            assert len(held) < LIMIT, "the daemon never ran out of fds"
            held.append(client(daemon))
            wait_for(lambda: answered(held[-1]) or bool(daemon.events("api.accept_paused")),
                     60)  # fmt: skip
        assert all(pid_alive(pid) for pid in pids.values())  # the services go on
        assert daemon.proc.poll() is None
    # The clients are gone: the next accept gets a connection, and the API answers.
    assert daemon.status()[running[0]]["pid"] == pids[running[0]]
    elapsed = time.monotonic() - began
    [paused] = daemon.events("api.accept_paused")  # one warning for the episode
    assert "Too many open files" in paused["error"]
    [resumed] = daemon.events("api.accept_resumed")
    # asyncio retries the accept once a second: a spinning loop would count thousands.
    assert 1 <= resumed["failed_accepts"] <= elapsed + 2, (resumed, elapsed)

    # Fds free up (units removed): as many units go as waited, so the rest number what ran
    # (the daemon's own fds decide how many that is; if fewer ran than waited, the waiting
    # beyond go too); the units that waited start, the others were untouched.
    gone = running[: len(waiting)] + waiting[: max(0, len(waiting) - len(running))]
    for name in gone:
        daemon.remove_unit(name)
    daemon.signal(1)
    kept = [n for n in names if n not in gone]
    wait_for(lambda: sorted(daemon.status()) == sorted(kept)
             and all(u["state"] == "running" for u in daemon.status().values()), 120,
             lambda: f"{daemon.status()}")  # fmt: skip
    units = daemon.status()
    for name in running[len(waiting) :]:
        assert units[name]["pid"] == pids[name]  # never restarted
    assert "Traceback" not in daemon.stderr_path().read_text()
    assert daemon.stop() == 0
