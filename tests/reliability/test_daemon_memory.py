"""The daemon under memory pressure (issue 29): run in a memory cgroup limited to what the
README recommends for its unit count (MemoryMax = base + per unit), with 200 units started at
once, queried and reloaded, it is never OOM-killed and its anonymous memory stays below the
limit. The 1000-unit figures are measured by `python -m tests.bench --only faults`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.kit import cgroup_version, env_int, unit_text, wait_for
from tests.support.memcg import daemon_memcg, memory_root

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
    pytest.mark.skipif(
        cgroup_version() != 0 and memory_root() is None, reason="no memory cgroup controller"
    ),
]

# The README's recommendation (Reliability, "Memory"): MemoryMax = 64 MiB + 64 KiB per unit.
BASE = 64 << 20
PER_UNIT = 64 << 10
UNITS = env_int("SANDBOXD_MEMORY_UNITS", 200)


def test_the_daemon_stays_under_its_recommended_memory_limit(
    rdaemons: Callable[[], Any],
) -> None:
    daemon = rdaemons()
    limit = BASE + UNITS * PER_UNIT
    with daemon_memcg(f"sandboxd-rel-mem-{daemon.tag}") as cg:
        cg.set_limit(limit)
        try:
            for i in range(UNITS):
                name = f"m{i}"
                daemon.write_unit(name, unit_text(["/bin/sleep", "100000"], daemon, name))
            daemon.start(wrapper=cg.wrapper)
            assert daemon.proc.pid in cg.pids()  # charged there, as under MemoryMax=
            wait_for(
                lambda: sum(u["state"] == "running" for u in daemon.status().values()) == UNITS,
                300,
                lambda: f"{cg.anon() >> 20} MiB anon, {cg.oom_kills()} OOM kills",
            )
            # Work that allocates per request: status of every unit, events replay, a reload.
            for _ in range(5):
                daemon.status()
                assert daemon.request("GET", "/v1/units/m0")[0] == 200
            assert daemon.request("POST", "/v1/reload")[0] == 200
            assert daemon.proc.poll() is None
            assert cg.oom_kills() == 0
            assert cg.anon() < limit, (cg.anon(), limit)
            assert "Traceback" not in daemon.stderr_path().read_text()
            assert daemon.stop(300) == 0
            assert cg.oom_kills() == 0  # stopping 200 units did not push it over either
        finally:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop(300)
