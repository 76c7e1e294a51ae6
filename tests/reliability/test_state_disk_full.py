"""A full state disk (issue 29): the state dir is a real 1 MiB tmpfs, filled up by the test.

A state save is a side effect of a state change, so the change goes ahead: the restart asked
for happens, the other services are untouched, the old record stays whole (never torn, no
temp file left), the daemon says so once for the whole episode, and once space returns the
record catches up without any further change to the unit, so that a daemon killed then
re-adopts the new run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kit import cgroup_version, pid1s, uname, unit_text, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]


def fill(directory: Path) -> Path:
    """A file in `directory` that takes every free block of its filesystem."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        chunk = bytes(4096)
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return filler
    finally:
        os.close(fd)


@contextlib.contextmanager
def on_tmpfs(daemon: Any, directory: Path, size: str) -> Iterator[None]:
    """`directory` (one of the daemon's) made a fresh tmpfs of `size`, to be filled up; at the
    end, even on failure, the daemon is stopped and the tmpfs unmounted."""
    directory.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700",
                    f"sbx-test-{directory.name}", str(directory)], check=True)  # fmt: skip
    try:
        yield
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.stop()
        subprocess.run(["umount", str(directory)], check=True)


def record(daemon: Any, unit: str) -> dict[str, Any]:
    return dict(json.loads((daemon.state / "units" / f"{unit}.json").read_bytes()))


def test_a_full_state_disk_keeps_the_old_record_and_catches_up(
    rdaemons: Callable[[], Any],
) -> None:
    daemon = rdaemons()
    with on_tmpfs(daemon, daemon.state, "1m"):
        a, b = uname(daemon, "a"), uname(daemon, "b")
        for name in (a, b):
            daemon.write_unit(name, unit_text(["/bin/sleep", "100000"], daemon, name))
        daemon.start()
        first = daemon.wait_unit(a, lambda u: u["state"] == "running", 60)
        bystander = daemon.wait_unit(b, lambda u: u["state"] == "running", 60)
        wait_for(lambda: record(daemon, a).get("pid") == first["pid"], 60)
        before = (daemon.state / "units" / f"{a}.json").read_bytes()

        filler = fill(daemon.state)
        status, body = daemon.request("POST", f"/v1/units/{a}/restart")
        assert status == 200, body  # the restart is not refused for want of a state file
        second = daemon.wait_unit(a, lambda u: u["state"] == "running" and u["pid"] != first["pid"],
                                  60)  # fmt: skip
        # stopping, starting, running: none of them reached the disk, the old record is whole.
        assert (daemon.state / "units" / f"{a}.json").read_bytes() == before
        # No torn temp left: the records, and the temps kept for their next save, empty.
        files = {p.name: p.stat().st_size for p in (daemon.state / "units").iterdir()}
        assert {n for n in files if not n.endswith(".tmp")} == {f"{a}.json", f"{b}.json"}
        assert {n: s for n, s in files.items() if n.endswith(".tmp") and s} == {}
        failed = daemon.events("store.save_failed")
        assert len(failed) == 1, failed  # one warning for the episode
        assert failed[0]["unit"] == a and "No space left on device" in failed[0]["error"]
        assert daemon.status()[b]["pid"] == bystander["pid"]  # untouched

        filler.unlink()  # space returns: the record catches up with no change to the unit
        wait_for(lambda: record(daemon, a).get("pid") == second["pid"], 60,
                 lambda: f"record: {record(daemon, a)}")  # fmt: skip
        resumed = daemon.events("store.save_resumed")
        # At least one write failed per record tried; how many were tried is not fixed: a
        # record that a newer one replaced before the writer thread reached it is never tried.
        assert len(resumed) == 1 and resumed[0]["failed_saves"] >= 1, resumed
        assert "Traceback" not in daemon.stderr_path().read_text()

        # The caught-up record is the one the next daemon goes by: it re-adopts the new run.
        daemon.kill9()
        daemon.start()
        again = daemon.wait_unit(a, lambda u: u["state"] == "running", 60)
        assert again["pid"] == second["pid"], again
        assert pid1s(daemon)[a] == [second["pid"]]
        assert daemon.status()[b]["pid"] == bystander["pid"]
        assert daemon.stop() == 0


def test_a_full_data_disk_fails_the_services_writes_not_the_daemon(
    rdaemons: Callable[[], Any],
) -> None:
    """The data dir (overlay upper layers, leases, the layer store) on a 2 MiB tmpfs: a service
    whose copy-on-write layer fills it gets ENOSPC for its own writes and runs on; the daemon,
    its API and a neighbour are not disturbed, and the unit restarts cleanly on request."""
    daemon = rdaemons()
    with on_tmpfs(daemon, daemon.data, "2m"):
        writer, calm = uname(daemon, "writer"), uname(daemon, "calm")
        script = ("head -c 8000000 /dev/zero > /usr/sbx-fill; echo fill-exit=$?; "
                  "echo more > /usr/sbx-more; echo more-exit=$?; exec sleep 100000")  # fmt: skip
        daemon.write_unit(writer, unit_text(["/bin/sh", "-c", script], daemon, writer,
                                            sandbox={"overlay": True}))  # fmt: skip
        daemon.write_unit(calm, unit_text(["/bin/sleep", "100000"], daemon, calm))
        daemon.start()
        bystander = daemon.wait_unit(calm, lambda u: u["state"] == "running", 60)
        wait_for(lambda: "more-exit=" in daemon.output(writer), 60,
                 lambda: daemon.output(writer))  # fmt: skip
        out = daemon.output(writer)
        assert "No space left on device" in out and "fill-exit=1" in out, out
        assert "more-exit=1" in out, out  # still full: the service's writes fail, nothing else
        first = daemon.wait_unit(writer, lambda u: u["state"] == "running", 10)
        assert daemon.status()[calm]["pid"] == bystander["pid"]
        # The host's /usr never saw it: the writes went to the (full) upper layer only.
        assert not Path("/usr/sbx-fill").exists()

        status, body = daemon.request("POST", f"/v1/units/{writer}/restart")
        assert status == 200, body
        daemon.wait_unit(writer, lambda u: u["state"] == "running" and u["pid"] != first["pid"],
                         60)  # fmt: skip
        assert daemon.status()[calm]["pid"] == bystander["pid"]
        assert "Traceback" not in daemon.stderr_path().read_text()
        assert daemon.stop() == 0


def test_a_transient_unit_on_a_full_state_disk_is_refused_with_the_reason(
    rdaemons: Callable[[], Any],
) -> None:
    """`sandboxctl run` needs its unit file in the state dir: on a full disk it fails with the
    reason, leaves no half-written file, and works again once space returns."""
    daemon = rdaemons()
    env = {**os.environ, "SANDBOXD_SOCKET": str(daemon.socket)}
    env.pop("TERM", None)
    run = [sys.executable, "-m", "supervisor.cli.main", "run", "--name"]
    with on_tmpfs(daemon, daemon.state, "1m"):
        daemon.start()
        (daemon.state / "transient").mkdir(exist_ok=True)
        filler = fill(daemon.state)
        name = uname(daemon, "once").replace("@", "-")  # a transient name has no '@'
        out = subprocess.run([*run, name, "--", "/bin/true"], env=env, capture_output=True,
                             text=True, timeout=120, check=False)  # fmt: skip
        assert out.returncode != 0, out
        assert "no space left on device" in out.stderr, out.stderr
        assert list((daemon.state / "transient").iterdir()) == []
        assert name not in daemon.status()

        filler.unlink()
        out = subprocess.run([*run, name, "--wait", "--rm", "--", "/bin/true"], env=env,
                             capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert out.returncode == 0, out.stderr
        text = daemon.stderr_path().read_text()
        assert "Traceback" not in text, text[text.index("Traceback") - 300 :]
        assert daemon.stop() == 0
