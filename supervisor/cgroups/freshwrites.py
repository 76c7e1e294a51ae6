"""Which limit writes a cgroup v1 directory just made by mkdir(2) can do without.

A resource plan writes every file it knows (resources.py), the default too, so that a live
update lifts a removed limit. On a cgroup that mkdir has just made, the defaults are what the
kernel put there already: of a unit's ~20 writes at creation, 6 (memory, memsw and soft limit
"-1", the CFS period and quota, the default shares) and blkio's default weight rewrite the
value the cgroup has, each a write(2) under a kernel lock, in a storm of starts on the daemon's
one thread.

Which writes those are is learnt, not assumed: the first time a (file, value) pair is to be
written to a fresh cgroup, the file is read before and after the write, and the pair is a no-op
from then on iff both reads agree ("-1" reads back as the number the kernel keeps for
"unlimited", so the raw text is compared, not the value). That holds for every later fresh
cgroup because the files in `CONSTANT_AT_MKDIR` start at a kernel constant, whatever the
parent's setting (not inherited: tests/integration/test_cgroups.py checks it on the real
kernel under a parent with every one of them changed). A cgroup that was not made just now (an
empty leftover, reused) or any other file gets every write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from supervisor.cgroups import files

# The v1 files whose value in a new cgroup is the kernel's constant default, not copied from
# the parent (mem_cgroup_css_alloc: page_counter_init to PAGE_COUNTER_MAX; tg's CFS bandwidth
# starts at the default period and RUNTIME_INF; shares at NICE_0_LOAD; blkio's weight at the
# policy's legacy default).
CONSTANT_AT_MKDIR = frozenset(
    {
        "memory.limit_in_bytes",
        "memory.memsw.limit_in_bytes",
        "memory.soft_limit_in_bytes",
        "cpu.cfs_period_us",
        "cpu.cfs_quota_us",
        "cpu.shares",
        "blkio.weight",
        "blkio.bfq.weight",
    }
)


class FreshWrites:
    """One per cgroup manager (its hierarchies are fixed): the pairs learnt so far."""

    def __init__(self) -> None:
        self.noops: set[tuple[str, str]] = set()
        self._changes: set[tuple[str, str]] = set()  # learnt to change a fresh cgroup's value

    def write(self, writes: Iterable[tuple[str, str]], path_of: Callable[[str], str]) -> None:
        """Do `writes` (in order) to a cgroup mkdir has just made, skipping the learnt no-ops."""
        for name, value in writes:
            pair = (name, value)
            if pair in self.noops:
                continue
            path = path_of(name)
            if name not in CONSTANT_AT_MKDIR or pair in self._changes:
                files.write(path, value)
                continue
            before = files.read(path)
            files.write(path, value)
            (self.noops if files.read(path) == before else self._changes).add(pair)
