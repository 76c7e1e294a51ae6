"""Soak: 10 services crash-looping as fast as the daemon restarts them (delay 0) for
SANDBOXD_SOAK_SECONDS (300 on CI, 60 elsewhere unless set); the daemon's open fds and RSS stay
flat, no zombie piles up, and the daemon keeps answering.

"Flat" is judged on samples taken every 2 s after a warm-up (the first fifth): the median of the
last third may exceed the median of the first third by at most FD_SLACK fds and RSS_SLACK_KIB.
At the rates this host reaches (hundreds of restarts per second in all), a leak of one fd per
few hundred restarts or of a few hundred bytes per restart crosses those bounds.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.kit import (
    cgroup_version,
    env_seconds,
    fd_count,
    rss_kib,
    uname,
    unit_text,
    zombies_of,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]

SOAK_SECONDS = env_seconds("SANDBOXD_SOAK_SECONDS", 300.0, 60.0)
UNITS = 10
SAMPLE_EVERY = 2.0
FD_SLACK = 8
RSS_SLACK_KIB = 8 * 1024
MAX_ZOMBIES = 2 * UNITS  # reaped as their pidfds fire; a pile-up would grow without bound


def test_crash_loop_soak(rdaemons: Callable[[], Any]) -> None:
    daemon = rdaemons()
    daemon.config.write_text('log_max_size = "32K"\nlog_keep = 1\n')
    names = [uname(daemon, f"crash{i}") for i in range(UNITS)]
    for name in names:
        daemon.write_unit(
            name,
            unit_text(
                ["/bin/sh", "-c", "echo crash; exit 3"], daemon, name,
                restart={"policy": "always", "delay": "0", "burst": 10000, "interval": "1s"},
                resources={"pids_max": 16, "memory_max": "32M"},
            ),
        )  # fmt: skip
    daemon.start()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    began = time.monotonic()
    samples: list[tuple[float, int, int, int, int]] = []  # t, restarts, fds, rss, zombies
    while (now := time.monotonic() - began) < SOAK_SECONDS:
        status = daemon.status()  # also proves the daemon keeps answering
        assert daemon.proc.poll() is None, "daemon died during the soak"
        failed = [n for n, u in status.items() if u["state"] in ("failed", "invalid")]
        assert not failed, {n: status[n] for n in failed}
        restarts = sum(u["restarts"] for u in status.values())
        zombies = len(zombies_of(pid))
        samples.append((now, restarts, fd_count(pid), rss_kib(pid), zombies))
        assert zombies <= MAX_ZOMBIES, samples[-3:]
        time.sleep(max(0.0, SAMPLE_EVERY - (time.monotonic() - began - now)))
    total = samples[-1][1]
    rate = total / samples[-1][0]
    steady = [s for s in samples if s[0] >= SOAK_SECONDS / 5]
    third = max(1, len(steady) // 3)
    first, last = steady[:third], steady[-third:]
    fds = (statistics.median(s[2] for s in first), statistics.median(s[2] for s in last))
    rss = (statistics.median(s[3] for s in first), statistics.median(s[3] for s in last))
    report = (
        f"{total} restarts in {samples[-1][0]:.0f}s ({rate:.0f}/s) over {UNITS} units; "
        f"daemon fds {fds[0]:.0f} -> {fds[1]:.0f} (max {max(s[2] for s in steady)}), "
        f"RSS {rss[0] / 1024:.1f} -> {rss[1] / 1024:.1f} MiB "
        f"(max {max(s[3] for s in steady) / 1024:.1f}), max zombies {max(s[4] for s in samples)}"
    )
    print("\nsoak:", report)
    assert rate >= 5, f"not a crash loop at high rate: {report}"
    assert fds[1] - fds[0] <= FD_SLACK, f"fd growth: {report}\n{samples}"
    assert rss[1] - rss[0] <= RSS_SLACK_KIB, f"RSS growth: {report}\n{samples}"
    assert daemon.stop() == 0
