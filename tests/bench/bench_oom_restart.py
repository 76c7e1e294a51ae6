"""Reaction times of a real daemon: OOM kill -> the restarted service's exec (restart delay 0),
a crash (exit 1) -> the restarted exec (delay 0), and `sandboxctl reload` -> a new unit running.

    sudo .venv/bin/python -m tests.bench.bench_oom_restart [--cycles 20]

OOM: one unit allocates memory at once under memory_max = 32M (no swap), so every run is
OOM-killed a few ms after it starts and restarted with delay "0". The kill's time is the
kernel's (the `oom-kill:` line in /dev/kmsg naming this daemon's cgroup parent, CLOCK_MONOTONIC
converted to wall time); the exec's is the daemon's `unit.started` event (logged once the exec
succeeded). Crash: the service prints the wall time and exits 1; the time is from that print
to the next `unit.started`. Reload: each cycle writes a new unit file, runs `sandboxctl
reload`, and takes the new unit's `unit.started` event. Medians and p95 in ms.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import select
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support import kit

MEMHOG = "b = []\nwhile True:\n    b.append(bytearray(4 << 20))\n"


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(len(xs) * 0.95) - 1)]


def wall(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(event["timestamp"]).timestamp()


class Kmsg:
    """OOM kills in /dev/kmsg from now on, as wall-clock times."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)
        self.offset = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
        self.kills: list[float] = []

    def poll(self) -> None:
        while select.select([self.fd], [], [], 0)[0]:
            try:
                record = os.read(self.fd, 8192).decode(errors="replace")
            except BlockingIOError:
                return
            except OSError:  # EPIPE: overwritten records; carry on
                continue
            head, _, text = record.partition(";")
            if text.startswith("oom-kill:") and self.token in text:
                self.kills.append(int(head.split(",")[2]) / 1e6 + self.offset)

    def close(self) -> None:
        os.close(self.fd)


def oom_to_exec(cycles: int) -> tuple[list[float], list[float]]:
    daemon = kit.new_daemon("bench-oom")
    try:
        name = kit.uname(daemon, "memhog")
        daemon.write_unit(
            name,
            kit.unit_text(
                ["/usr/bin/python3", "-c", MEMHOG], daemon, name,
                resources={"memory_max": "32M", "swap_max": "0"},
                restart={"delay": "0", "burst": 10000, "interval": "1s"},
            ),
        )  # fmt: skip
        kmsg = Kmsg(daemon.cgroup_parent)
        try:
            daemon.start()
            deadline = time.monotonic() + 60 + cycles * 2
            while len(kmsg.kills) < cycles + 2 and time.monotonic() < deadline:
                kmsg.poll()
                time.sleep(0.05)
            daemon.stop()
            kmsg.poll()
        finally:
            kmsg.close()
        starts = sorted(wall(e) for e in daemon.events("unit.started") if e.get("unit") == name)
        exits = sorted(wall(e) for e in daemon.events("unit.exited") if e.get("unit") == name)
        delays, noticed = [], []
        for kill in kmsg.kills[1:]:  # the first kill may predate our reading
            after = [s for s in starts if s >= kill]
            seen = [x for x in exits if x >= kill]
            if after and seen:
                delays.append((after[0] - kill) * 1000)
                noticed.append((seen[0] - kill) * 1000)
        return delays[:cycles], noticed[:cycles]
    finally:
        finish(daemon)


def crash_to_exec(cycles: int) -> list[float]:
    """A service that prints the wall time and exits 1 at once, restarted with delay 0: from
    its print (a moment before its exit: a slight overestimate) to the next run's
    `unit.started` (the exec done)."""
    daemon = kit.new_daemon("bench-crash")
    try:
        name = kit.uname(daemon, "crasher")
        daemon.write_unit(
            name,
            kit.unit_text(
                ["/bin/sh", "-c", "date +%s.%N; exit 1"], daemon, name,
                restart={"delay": "0", "burst": 10000, "interval": "1s"},
            ),
        )  # fmt: skip
        daemon.start()
        kit.wait_for(lambda: len(daemon.events("unit.started")) >= cycles + 2, 60 + cycles * 2)
        daemon.stop()
        starts = sorted(wall(e) for e in daemon.events("unit.started") if e.get("unit") == name)
        crashes = [float(x) for x in daemon.output(name).split() if x.replace(".", "").isdigit()]
        delays = []
        for crash in crashes[1:]:  # the first run's start raced the daemon's own start-up
            after = [s for s in starts if s >= crash]
            if after:
                delays.append((after[0] - crash) * 1000)
        return delays[:cycles]
    finally:
        finish(daemon)


def reload_to_running(cycles: int) -> tuple[list[float], list[float]]:
    """(via a fresh `sandboxctl reload` process, via one API call), alternating."""
    daemon = kit.new_daemon("bench-reload")
    try:
        daemon.write_unit("base", kit.unit_text(["/bin/sleep", "100000"], daemon, "base"))
        daemon.start()
        env = {**os.environ, "SANDBOXD_SOCKET": str(daemon.socket)}
        sandboxctl = [str(Path(sys.executable).parent / "sandboxctl")]  # the venv's
        cli: list[float] = []
        api: list[float] = []
        for i in range(cycles * 2):
            name = f"new{i}"
            daemon.write_unit(name, kit.unit_text(["/bin/sleep", "100000"], daemon, name))
            t0 = time.time()
            if i % 2:
                daemon.request("POST", "/v1/reload")
            else:
                subprocess.run([*sandboxctl, "reload"], env=env, check=True, capture_output=True)
            kit.wait_for(lambda n=name: any(
                e.get("unit") == n for e in daemon.events("unit.started")), 30)  # fmt: skip
            (started,) = [e for e in daemon.events("unit.started") if e.get("unit") == name]
            (api if i % 2 else cli).append((wall(started) - t0) * 1000)
        daemon.stop()
        return cli, api
    finally:
        finish(daemon)


def finish(daemon: Any) -> None:
    with contextlib.suppress(Exception):
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
    problems = kit._teardown(daemon)
    shutil.rmtree(daemon.base, ignore_errors=True)
    if problems:
        print(f"cleanup problems: {problems}", file=sys.stderr)


def run(cycles: int = 20) -> dict[str, list[float]]:
    oom, noticed = oom_to_exec(cycles)
    crash = crash_to_exec(cycles)
    cli, api = reload_to_running(cycles)
    return {
        "OOM kill -> restarted exec (delay 0)": oom,
        "  of which: OOM kill -> daemon saw the exit": noticed,
        "crash (exit 1) -> restarted exec (delay 0)": crash,
        "sandboxctl reload -> new unit running": cli,
        "  POST /v1/reload -> new unit running": api,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    for what, xs in run(args.cycles).items():
        if xs:
            print(f"{what:45} median {statistics.median(xs):7.1f} ms  p95 {p95(xs):7.1f} ms"
                  f"  ({len(xs)} samples)")  # fmt: skip
        else:
            print(f"{what:45} no samples")


if __name__ == "__main__":
    main()
