"""A full log disk: the daemon keeps draining (the service never blocks), drops what the file
cannot take with one warning and no traceback, and says in the file what it dropped once
space returns. The log dir is a real 256 KiB tmpfs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.support.daemon_kit import Daemon, UnixHTTPConnection
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root]

# 25 MiB of output, 25x the output pipe: a service whose output is not drained blocks forever.
FLOOD = """
[service]
exec = ["/bin/sh", "-c", '''
i=0; while [ $i -lt 400 ]; do head -c 65536 /dev/zero; i=$((i+1)); done; echo flood done''']
[restart]
policy = "no"
"""


@pytest.fixture
def full_log_disk(daemon: Daemon) -> Iterator[Daemon]:
    daemon.logs.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "sbx-test-logs",
                    str(daemon.logs)], check=True)  # fmt: skip
    try:
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        subprocess.run(["umount", str(daemon.logs)], check=True)


def whole_log(daemon: Daemon) -> bytes:
    """flood.log and its rotated files, oldest first."""
    files = sorted(daemon.logs.glob("flood.log.*"), key=lambda p: -int(p.suffix[1:]))
    return b"".join(p.read_bytes() for p in [*files, daemon.logs / "flood.log"])


def test_a_full_log_disk_drops_output_and_never_blocks_the_service(full_log_disk: Daemon) -> None:
    daemon = full_log_disk
    daemon.write_unit("flood", FLOOD)
    daemon.start()
    done = daemon.wait_unit("flood", lambda u: u["state"] in ("exited", "failed"), timeout=60)
    assert done["last_exit"] == "exit-code:0", done  # it wrote all 25 MiB: nothing blocked it
    dropping = [e for e in daemon.events("unit.output_dropping") if e.get("unit") == "flood"]
    assert len(dropping) == 1, dropping  # one warning for the episode, not one per chunk
    assert "No space left on device" in dropping[0]["error"]
    assert "Traceback" not in daemon.stderr_path().read_text()
    assert (daemon.logs / "flood.log").stat().st_size > 0  # what fitted was kept
    dropped = daemon.unit("flood")["output_dropped_bytes"]
    assert dropped > 20 << 20, dropped  # counted where operators look: status and /metrics
    conn = UnixHTTPConnection(daemon.socket)
    try:
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
    finally:
        conn.close()
    sample = 'sandboxd_unit_output_dropped_bytes_total{unit="flood"} '
    [line] = [line for line in metrics.splitlines() if line.startswith(sample)]
    assert float(line.removeprefix(sample)) == dropped

    # Space returns: the next output gets in, after a line saying what was dropped.
    subprocess.run(["mount", "-o", "remount,size=64m", str(daemon.logs)], check=True)
    status, _ = daemon.request("POST", "/v1/units/flood/start")
    assert status == 200
    daemon.wait_unit("flood", lambda u: b"flood done" in whole_log(daemon), timeout=60)
    text = whole_log(daemon)
    marker = text.index(b"[sandboxd: ")
    assert b"bytes of output dropped: No space left on device]\n" in text[marker:]
    assert text.index(b"flood done") > marker
    resumed = [e for e in daemon.events("unit.output_resumed") if e.get("unit") == "flood"]
    assert len(resumed) == 1 and resumed[0]["dropped_bytes"] > 20 << 20, resumed
    assert daemon.stop() == 0
