"""Soak: a real sandboxd restarts crashing sandboxes N times (default 2000 cycles); prints the
daemon's open fd count and RSS along the way, then checks that no zombie, cgroup, process or
mount is left behind. Figures, not a pass/fail test (but leaks are reported loudly).

    .venv/bin/python -m tests.bench.soak_restarts [--cycles 2000] [--units 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.support.daemon_kit import Daemon, teardown

CRASHER = """
[service]
exec = ["/bin/sh", "-c", "echo crash; exit 1"]
[restart]
policy = "always"
delay = "0"
burst = 10000
interval = "1s"
"""


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def zombies_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] == "Z" and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=2000)
    p.add_argument("--units", type=int, default=2)
    args = p.parse_args()
    mounts_before = len(Path("/proc/self/mountinfo").read_text().splitlines())
    base = Path(tempfile.mkdtemp(prefix="sbx-soak-", dir="/tmp"))
    daemon = Daemon(base, f"sandboxd-soak-{os.getpid()}")
    daemon.config.write_text('log_max_size = "64K"\nlog_keep = 2\n')
    for i in range(args.units):
        daemon.write_unit(f"crash{i}", CRASHER)
    daemon.start()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    began = time.monotonic()
    print(f"{'cycles':>7} {'seconds':>8} {'fds':>5} {'rss KiB':>8} {'zombies':>8}")
    samples: list[tuple[int, int]] = []
    next_report = 0
    while True:
        total = sum(u["restarts"] for u in daemon.status().values())
        if total >= next_report:
            fds, rss = fd_count(pid), rss_kib(pid)
            samples.append((fds, rss))
            print(f"{total:>7} {time.monotonic() - began:>8.1f} {fds:>5} {rss:>8} "
                  f"{len(zombies_of(pid)):>8}", flush=True)  # fmt: skip
            next_report += max(1, args.cycles // 10)
        if total >= args.cycles:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - began
    print(f"{total} start/crash/restart cycles in {elapsed:.1f} s "
          f"({total / elapsed:.1f}/s)")  # fmt: skip
    (first_fds, first_rss), (last_fds, last_rss) = samples[1], samples[-1]
    print(f"fds {first_fds} -> {last_fds}; RSS {first_rss} -> {last_rss} KiB "
          f"(from the first sample after warm-up)")  # fmt: skip
    status = daemon.stop()
    problems = teardown(daemon)
    mounts_after = len(Path("/proc/self/mountinfo").read_text().splitlines())
    if mounts_after != mounts_before:
        problems.append(f"mounts: {mounts_before} before, {mounts_after} after")
    logs = sorted(p.name for p in daemon.logs.iterdir())
    print(f"daemon exit status {status}; log files {logs}")
    shutil.rmtree(base, ignore_errors=True)
    print("leftovers: " + ("; ".join(problems) if problems else "none (zombies, cgroups, mounts)"))
    return 1 if problems or status != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
