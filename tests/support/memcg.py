"""A memory cgroup for the daemon itself, as systemd's MemoryMax= would give it.

`daemon_memcg(name, limit)` makes `<memory root>/<name>` (cgroup v1's memory hierarchy, or a
v2 cgroup), and `wrapper` is the command a `Daemon.start(wrapper=...)` runs the daemon under:
it moves itself into the cgroup and execs the daemon, so the daemon, and the fork server it
spawns, are charged there from their first page. Sandboxes leave it: they live in their own
cgroups under the daemon's `--cgroup-parent`. The cgroup is removed at the end (it must be
empty by then: stop the daemon inside the block).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from tests.support.requires import CGROUP_ROOT, cgroup_version
from tests.support.waiting import wait_for


class MemCgroup:
    def __init__(self, path: Path, v2: bool) -> None:
        self.path, self.v2 = path, v2

    @property
    def wrapper(self) -> list[str]:
        procs = self.path / "cgroup.procs"
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs)]

    def set_limit(self, limit: int) -> None:
        name = "memory.max" if self.v2 else "memory.limit_in_bytes"
        (self.path / name).write_text(str(limit))

    def stat(self) -> dict[str, int]:
        lines = (self.path / "memory.stat").read_text().splitlines()
        return {k: int(v) for k, v in (line.split() for line in lines)}

    def anon(self) -> int:
        """Bytes of anonymous memory (heap, stacks): what cannot be reclaimed without swap,
        so what a limit must leave room for (page cache is reclaimed first)."""
        stat = self.stat()
        return stat["anon"] if self.v2 else stat["total_rss"]

    def peak(self) -> int | None:
        """The highest usage seen (cache included), if the kernel keeps it."""
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(FileNotFoundError):
            return int((self.path / name).read_text())
        return None

    def oom_kills(self) -> int:
        if self.v2:
            events = (self.path / "memory.events").read_text().split()
            return int(events[events.index("oom_kill") + 1])
        fields = (self.path / "memory.oom_control").read_text().split()
        return int(fields[fields.index("oom_kill") + 1]) if "oom_kill" in fields else 0

    def pids(self) -> list[int]:
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]


def memory_root() -> Path | None:
    if cgroup_version() == 2:
        return Path(CGROUP_ROOT)
    root = Path(CGROUP_ROOT) / "memory"
    return root if (root / "memory.limit_in_bytes").exists() else None


@contextlib.contextmanager
def daemon_memcg(name: str) -> Iterator[MemCgroup]:
    root = memory_root()
    assert root is not None, "no memory cgroup controller"
    v2 = cgroup_version() == 2
    if v2:
        controllers = (root / "cgroup.subtree_control").read_text().split()
        assert "memory" in controllers, "the memory controller is not enabled at the root"
    path = root / name
    path.mkdir()
    cg = MemCgroup(path, v2)
    try:
        yield cg
    finally:
        # The daemon stopped inside the block; its fork server dies with it (PDEATHSIG).
        wait_for(lambda: not cg.pids(), 60, lambda: f"left in {path}: {cg.pids()}")
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(path)
