"""Density: N idle sandboxes (`sleep`) under one real daemon, then the same with `crun run -d`.

    sudo .venv/bin/python -m tests.bench.bench_density [-n 1000] [--crun-n 1000] [--idle 60]

sandboxd: N unit files (default sandbox: pid, mount, uts, ipc, net, cgroup and user namespaces,
read-only host view, own cgroup; the host's busybox `sleep`, as crun runs), one daemon.
Measures the time until all N run, and meanwhile how long
GET /v1/units takes (every 0.1 s: p50 / p99 / max); the daemon's RSS (and the
fork server's); the daemon's CPU over --idle seconds with nothing to do; host memory per sandbox
(MemAvailable before/after, / N, with where it went: /proc/meminfo parts and every slab cache's
growth, and the daemon's own heap, which the delta includes); the mounts and own filesystems
(superblocks) of one sandbox; the processes per sandbox (every process carrying the unit's
marker, and every process under the daemon that is not a sandbox's PID 1: the goal is none but
the fork server); then, on those N running units, a reload with one changed file and
`sandboxctl status` (fresh process, table and --json).

crun: the same `sleep` in the same namespaces with memory+pids limits, `crun run -d` per
container (from a helper in `unshare -m` with /sys/fs/cgroup/unified unmounted there: crun
refuses hybrid hosts), its own --root and cgroup parent, all deleted at the end. crun leaves no
monitor process behind (conmon, which podman adds, would be one more process per container).
`crun_density(n, userns=True)` runs the same with a user namespace per container (one id range,
CRUN_USERNS_BASE), the fair peer for sandboxd's default units, which have one each.

Everything is cleaned up: the daemon stops its units; crun containers are deleted by id; only
PIDs and cgroups this run created are touched.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.bench.bench_status import API_WARM_UP, time_api
from tests.bench.proc_cpu import cpu_seconds, reaped_cpu_seconds
from tests.support import kit
from tests.support.daemon_kit import UnixHTTPConnection


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise RuntimeError("no MemAvailable")


def host_mounts(under: str = "/") -> int:
    """Mounts in this process's mount namespace (the host's) at or below `under`: what every
    launch's unshare of a mount namespace copies, and its PID 1 detaches again with the old
    root. A side's own directory as `under` counts what it left there alone, whatever other
    processes mount or unmount meanwhile."""
    top = under.rstrip("/") + "/"
    points = (line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
    return sum((p.rstrip("/") + "/").startswith(top) for p in points)


def cpu_per_start(parts: dict[str, float], n: int) -> dict[str, float]:
    """CPU seconds by process, as ms per start: `{part}` for each, and `total`. Live
    processes' CPU is read to the ns (`proc_cpu`), reaped ones' from their parent's
    cutime + cstime; kernel work done in no process's name (kworkers, RCU callbacks) is in
    neither side's figure."""
    out = {k: v * 1000 / n for k, v in parts.items()}
    out["total"] = sum(out.values())
    return {k: round(v, 2) for k, v in out.items()}


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                ppid = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]
                if int(ppid) == pid:
                    found.append(int(entry))
    return found


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# /proc/meminfo fields that say where a sandbox's memory went: tmpfs pages (Shmem), kernel
# objects (Slab), kernel stacks, page tables, per-CPU data, the processes' own pages.
MEMINFO_PARTS = ("Shmem", "Slab", "KernelStack", "PageTables", "Percpu", "AnonPages", "Cached")


# The fields MemAvailable is computed from (mm/show_mem.c, si_mem_available): free pages, plus
# the page cache and the reclaimable kernel memory (reclaimable slab: dentries, inodes; and
# KReclaimable's other part), each less a low-watermark's worth that is far below either on a
# host with GBs. So what a side adds there (its files' cache, /proc and cgroup inodes it makes
# looked at, crun's state files) is in its Slab growth but not in its MemAvailable delta.
AVAILABLE_PARTS = ("MemFree", "Active(file)", "Inactive(file)", "KReclaimable", "SReclaimable",
                   "SUnreclaim")  # fmt: skip


def meminfo_kib() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in MEMINFO_PARTS or name in AVAILABLE_PARTS:
            out[name] = int(rest.split()[0])
    return out


def available_explained(before: dict[str, int], after: dict[str, int], n: int) -> dict[str, float]:
    """The MemAvailable delta per sandbox taken apart (KiB per sandbox, from two meminfo_kib
    reads): `taken` is what MemAvailable counts as gone (the drop in free pages, less the page
    cache and reclaimable kernel memory that grew meanwhile and that it counts as available),
    made of `anon` (processes' private pages: the daemon's heap on sandboxd's side), `tmpfs`,
    `kernel` (unreclaimable slab, kernel stacks, page tables, per-CPU data) and `rest` (what
    meminfo does not name: vmalloc, page-cache pages dropped meanwhile, other processes);
    `not_counted` is the reclaimable slab and page cache a side grew, which Slab or Cached
    shows but MemAvailable does not."""

    def grew(*fields: str) -> float:
        return sum(after[f] - before[f] for f in fields) / n

    cache, reclaimable = grew("Active(file)", "Inactive(file)"), grew("KReclaimable")
    taken = -grew("MemFree") - cache - reclaimable
    parts = {"anon": grew("AnonPages"), "tmpfs": grew("Shmem"),
             "kernel": grew("SUnreclaim", "KernelStack", "PageTables", "Percpu")}  # fmt: skip
    rest = taken - sum(parts.values())
    out = {"taken": taken, **parts, "rest": rest, "not_counted_slab": reclaimable,
           "not_counted_cache": cache}  # fmt: skip
    return {k: round(v, 1) for k, v in out.items()}


def slab_kib() -> dict[str, float]:
    """KiB in use in each slab cache (active objects x object size), from /proc/slabinfo: the
    objects in use, not the slabs' capacity (num_objs), which moves by whole slabs and keeps
    freed objects' room."""
    out: dict[str, float] = {}
    for line in Path("/proc/slabinfo").read_text().splitlines()[2:]:
        f = line.split()
        out[f[0]] = int(f[1]) * int(f[3]) / 1024  # active_objs x objsize
    return out


def memory_cgroups() -> int | None:
    """Memory cgroups on the host, dying ones included (/proc/cgroups counts a removed cgroup
    until the kernel frees it): each holds a slot per shrinker id, so every one another process
    makes or frees meanwhile moves the MemAvailable delta by as much as a sandbox's own."""
    for line in Path("/proc/cgroups").read_text().splitlines():
        f = line.split()
        if f and f[0] == "memory":
            return int(f[2])
    return None


def memory_snapshot() -> dict[str, Any]:
    return {"available": settle_memory(), "meminfo": meminfo_kib(), "slab": slab_kib(),
            "memcgs": memory_cgroups()}  # fmt: skip


def memcgs_under(top: str) -> int:
    """Memory cgroups a side made (live ones): `top` and every cgroup below it, for `top` a
    glob of names at the hierarchy's root (cgroup v1's memory hierarchy, else v2's)."""
    v1 = Path("/sys/fs/cgroup/memory")
    root = v1 if v1.is_dir() else Path("/sys/fs/cgroup")
    return sum(1 + sum(1 for d in t.rglob("*") if d.is_dir()) for t in root.glob(top))


def others_memcgs(before: dict[str, Any], after: dict[str, Any], made: int) -> int | None:
    """Memory cgroups other processes made (or, negative, freed) between two snapshots of a
    side that made `made` itself: not 0 means the host changed under the figure."""
    if before.get("memcgs") is None or after.get("memcgs") is None:
        return None
    return int(after["memcgs"] - before["memcgs"] - made)


def empty_memcg_kib(count: int = 50) -> float | None:
    """What an empty memory cgroup costs in slab right now (KiB, mean over `count` made and
    removed again): mostly its slots for every shrinker id the host has handed out at once
    (mm/shrinker.c), which every filesystem on the host adds to. Each sandbox has one, on
    either side, so this is the floor under both figures, and it moves between the sides'
    runs when other processes mount many filesystems meanwhile. None without a memory
    controller to make them in."""
    v1 = Path("/sys/fs/cgroup/memory")
    parent = (v1 if v1.is_dir() else Path("/sys/fs/cgroup")) / f"sandboxd-bench-memcg-{os.getpid()}"
    try:
        parent.mkdir()
    except OSError:
        return None
    made: list[Path] = []
    try:
        before = sum(slab_kib().values())
        for i in range(count):
            made.append(parent / f"c{i}")
            made[-1].mkdir()
        return (sum(slab_kib().values()) - before) / count
    finally:
        for d in [*reversed(made), parent]:
            with contextlib.suppress(OSError):
                d.rmdir()


SLAB_TOP = 10  # caches in the side-by-side table


def breakdown(
    before: dict[str, Any], after: dict[str, Any], n: int, made: int, top: int = SLAB_TOP
) -> dict[str, Any]:
    """Per sandbox: MemAvailable's drop, the meminfo parts' growth, and the slab caches that
    grew most (KiB each), so a figure comes with where it went (`slab_delta_kib` keeps every
    cache, for the side-by-side table); and the memory cgroups others made or freed meanwhile
    besides the side's own `made` (`others_memcgs`)."""
    parts = {k: (after["meminfo"][k] - before["meminfo"][k]) / n for k in before["meminfo"]}
    slabs = {name: (kib - before["slab"].get(name, 0.0)) / n for name, kib in after["slab"].items()}
    grown = sorted(slabs.items(), key=lambda kv: -kv[1])[:top]
    return {
        "host_kib_per_sandbox": (before["available"] - after["available"]) / n,
        "meminfo_kib_per_sandbox": {k: round(v, 1) for k, v in parts.items()},
        "slab_kib_per_sandbox": {k: round(v, 1) for k, v in grown},
        "slab_total_kib_per_sandbox": round(sum(slabs.values()), 1),
        "slab_delta_kib": {k: round(v, 2) for k, v in slabs.items() if abs(v) >= 0.05},
        "others_memcgs": others_memcgs(before, after, made),
        "available_explained": available_explained(before["meminfo"], after["meminfo"], n),
    }


def slab_table(sides: dict[str, dict[str, Any]], top: int = SLAB_TOP) -> list[str]:
    """The slab caches that grew most per sandbox, one column per side measured (KiB per
    sandbox): the `top` caches by the largest growth on any side, so a cache one side grows
    and the other does not shows up either way, then the meminfo parts and the totals, and
    what an empty memory cgroup cost before each side started (`empty_memcg_kib`)."""
    sides = {who: out for who, out in sides.items() if "slab_delta_kib" in out}
    if not sides:
        return []
    caches: set[str] = set()
    for out in sides.values():
        caches |= set(out["slab_delta_kib"])
    largest = sorted(
        caches, key=lambda c: -max(out["slab_delta_kib"].get(c, 0.0) for out in sides.values())
    )[:top]
    rows = [(c, [out["slab_delta_kib"].get(c, 0.0) for out in sides.values()]) for c in largest]
    rows.append(
        ("(every slab cache)", [out["slab_total_kib_per_sandbox"] for out in sides.values()])
    )
    for part in MEMINFO_PARTS:
        rows.append(
            (f"meminfo {part}", [out["meminfo_kib_per_sandbox"][part] for out in sides.values()])
        )
    rows.append(("MemAvailable delta", [out["host_kib_per_sandbox"] for out in sides.values()]))
    if all(out.get("empty_memcg_kib") is not None for out in sides.values()):
        # Measured before each side started: the floor under its figure (empty_memcg_kib).
        rows.append(("an empty memory cgroup", [out["empty_memcg_kib"] for out in sides.values()]))
    width = max(len(name) for name, _ in rows) + 2
    cols = [max(len(who), 9) + 2 for who in sides]
    head = "KiB per sandbox".ljust(width) + "".join(
        w.rjust(c) for w, c in zip(sides, cols, strict=True)
    )
    lines = [head, "-" * len(head)]
    for name, values in rows:
        lines.append(
            name.ljust(width)
            + "".join(f"{v:.1f}".rjust(c) for v, c in zip(values, cols, strict=True))
        )
    return lines


def mount_view(pid: int) -> dict[str, int]:
    """What one sandbox's mount namespace holds: its mounts, and the filesystems (superblocks,
    by device number) it has that the host's mount table does not (proc, tmpfs, devpts, ...:
    made for this sandbox alone). Each superblock also registers a memcg-aware shrinker, and
    every memory cgroup on the host keeps a slot for every shrinker id (mm/shrinker.c): the
    more superblocks per sandbox, the more each sandbox's cgroup costs."""

    def lines(of: int) -> list[str]:
        return Path(f"/proc/{of}/mountinfo").read_text().splitlines()

    mine = lines(pid)
    own = {line.split()[2] for line in mine} - {line.split()[2] for line in lines(1)}
    # An IPC namespace makes its own mqueue filesystem whether or not it is mounted (crun
    # mounts it, sandboxd does not): counted for both sides, or crun's alone would show.
    # (Our own IPC namespace is the host's: PID 1's may not be read here.)
    mqueue_mounted = any(" - mqueue " in line for line in mine)
    own_ipc = os.readlink(f"/proc/{pid}/ns/ipc") != os.readlink("/proc/self/ns/ipc")
    return {"mounts": len(mine), "own_superblocks": len(own) + (own_ipc and not mqueue_mounted)}


def _memory_cgroup(pid: int) -> Path | None:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory" + path)
        if controllers == "" and not Path("/sys/fs/cgroup/memory").is_dir():
            return Path("/sys/fs/cgroup" + path)  # v2
    return None


def own_cgroup_kib(pids: list[int]) -> dict[str, float]:
    """What each sandbox's own memory cgroup is charged (median over `pids`, KiB): all of it,
    its kernel memory and its tmpfs pages. Unlike the MemAvailable delta, other processes on
    the host do not move it, so a change to one side shows here first; but it holds only what
    was allocated from inside the cgroup (crun makes a container's namespaces before moving
    it in, sandboxd's launcher joins the cgroup first), so compare a side with itself."""
    rows: list[dict[str, float]] = []
    for pid in pids:
        with contextlib.suppress(OSError):
            cg = _memory_cgroup(pid)
            if cg is None:
                continue
            stat = dict(line.split() for line in (cg / "memory.stat").read_text().splitlines())
            if (cg / "memory.usage_in_bytes").exists():  # v1
                usage = int((cg / "memory.usage_in_bytes").read_text())
                kmem = int((cg / "memory.kmem.usage_in_bytes").read_text())
            else:
                usage = int((cg / "memory.current").read_text())
                kmem = int(stat.get("kernel", 0))
            rows.append({"usage": usage / 1024, "kernel": kmem / 1024,
                         "shmem": int(stat.get("shmem", 0)) / 1024})  # fmt: skip
    if not rows:
        return {}
    return {k: statistics.median(r[k] for r in rows) for k in ("usage", "kernel", "shmem")}


def anon_kib(pid: int) -> int:
    """The process's private anonymous memory (RssAnon): its heap, not the shared libraries
    other processes map too."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def descendants(roots: list[int]) -> list[int]:
    """`roots` and every process below them, from one walk of /proc."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(entry))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(kids.get(pid, ()))
    return found


def pss_anon_kib(pids: list[int]) -> int:
    """The anonymous memory these processes hold, each shared page divided among the processes
    sharing it (Pss_Anon): what they add to meminfo's AnonPages, copy-on-write pages after a
    fork counted once (RssAnon would count them in the parent and in every child)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss_Anon:"):
                    total += int(line.split()[1])
                    break
    return total


def side_anon(out: dict[str, Any], roots: list[int]) -> None:
    """The side's own anonymous memory (its processes', the daemon's among them, Pss_Anon of
    `roots` and their descendants) beside the AnonPages growth its snapshots saw: the rest is
    other processes' memory, which moves the MemAvailable delta as much and is no side's cost
    (`others_anon_kib_per_sandbox`; the verdict is withheld when it is large, see __main__)."""
    n, why = out["n"], out["available_explained"]
    own = pss_anon_kib(descendants(roots)) / n
    why["own_anon"] = round(own, 1)
    out["others_anon_kib_per_sandbox"] = round(why["anon"] - own, 1)


def print_breakdown(who: str, out: dict[str, Any]) -> None:
    if "slab_kib_per_sandbox" not in out:
        return
    print(f"{who}: host memory per sandbox {out['host_kib_per_sandbox']:.0f} KiB "
          f"(MemAvailable delta / {out['n']})", flush=True)  # fmt: skip
    print("  meminfo per sandbox, KiB: " + ", ".join(
        f"{k} {v:.0f}" for k, v in out["meminfo_kib_per_sandbox"].items()))  # fmt: skip
    if out.get("others_memcgs"):
        print(f"  other processes made {out['others_memcgs']:+d} memory cgroups meanwhile "
              "(the verdict is withheld beyond 1 % of N)", flush=True)  # fmt: skip
    print(f"  slab per sandbox {out['slab_total_kib_per_sandbox']:.0f} KiB; top caches: "
          + ", ".join(f"{k} {v:.1f}" for k, v in out["slab_kib_per_sandbox"].items()))  # fmt: skip
    why = out["available_explained"]
    print(f"  MemAvailable counts {why['taken']:.0f} KiB per sandbox as taken: anon "
          f"{why['anon']:.0f}, tmpfs {why['tmpfs']:.0f}, unreclaimable kernel {why['kernel']:.0f}, "
          f"unnamed {why['rest']:.0f}; and as still available: reclaimable slab "
          f"{why['not_counted_slab']:.0f}, page cache {why['not_counted_cache']:.0f}",
          flush=True)  # fmt: skip
    if "others_anon_kib_per_sandbox" in out:
        print(f"  anon: the side's own processes {why['own_anon']:.0f} KiB per sandbox, other "
              f"processes {out['others_anon_kib_per_sandbox']:+.0f}", flush=True)  # fmt: skip


# Seconds after the last start before a side's idle window: the start burst's end (the
# daemon's settle and trims, crun's last container's exec).
SETTLE_S = 5.0


def proc_walk() -> None:
    """Read every process's environ and stat once, as sandboxd's side does to find its
    sandboxes (kit.marked_processes) and its fork server (children): each read makes /proc
    inodes and dentries, in the slab figures of whichever side walks, so crun's walks too."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            for name in ("environ", "stat"):
                with contextlib.suppress(OSError):
                    Path(f"/proc/{entry}/{name}").read_bytes()


def settle_memory(seconds: float = 3.0) -> int:
    """MemAvailable once it stops moving (median of a few reads)."""
    reads = []
    for _ in range(int(seconds / 0.5)):
        reads.append(mem_available_kib())
        time.sleep(0.5)
    return int(statistics.median(reads))


# Both sides run the same program, the host's static busybox (crun's root holds a copy of it):
# a dynamically linked /bin/sleep would add its own page tables and relocated libc pages to
# sandboxd's figure alone.
BUSYBOX = "/usr/bin/busybox"
SLEEPER = [BUSYBOX, "sleep", "1000000"] if os.path.exists(BUSYBOX) else ["/bin/sleep", "1000000"]


def sandboxd_density(n: int, idle: float, status_runs: int) -> dict[str, Any]:
    raise_nofile()
    daemon = kit.new_daemon("bench-density")
    out: dict[str, Any] = {"n": n}
    try:
        daemon.config.write_text('log_max_size = "16K"\nlog_keep = 1\n')
        names = [f"s{i:04d}" for i in range(n)]
        for name in names:
            daemon.write_unit(
                name,
                kit.unit_text(SLEEPER, daemon, name, service={"stop_timeout": "200ms"}),
            )
        out["empty_memcg_kib"] = empty_memcg_kib()
        before = memory_snapshot()
        out.update(start_all(daemon, n))  # its CPU accounting walks /proc once (proc_walk)
        assert daemon.proc is not None
        pid = daemon.proc.pid
        time.sleep(SETTLE_S)
        out["rss_mb"] = kit.rss_kib(pid) / 1024
        sandbox_pids = {p for ps in kit.pid1s(daemon).values() for p in ps}
        helpers = [c for c in children(pid) if c not in sandbox_pids]
        out["forkserver_rss_mb"] = sum(kit.rss_kib(c) for c in helpers) / 1024
        c0 = cpu_seconds(pid)
        time.sleep(idle)
        out["idle_cpu_pct"] = (cpu_seconds(pid) - c0) / idle * 100
        out["idle_window_s"] = idle
        out["rss_after_idle_mb"] = kit.rss_kib(pid) / 1024
        # The daemon's and the fork server's heaps are in the MemAvailable delta too (the
        # snapshot before was taken with no daemon): their share, to tell apart from what
        # each sandbox costs the kernel.
        out["daemon_anon_kib"] = anon_kib(pid) + sum(anon_kib(c) for c in helpers)
        out["daemon_own_anon_kib"] = anon_kib(pid)
        # At the point crun's is taken too: after the same settle, /proc walks and idle window,
        # before the scans of every sandbox below (their /proc and cgroup inodes).
        after = memory_snapshot()
        out.update(breakdown(before, after, n, memcgs_under(daemon.cgroup_parent)))
        side_anon(out, [pid])
        print_breakdown("sandboxd", out)
        marked = kit.marked_processes(daemon)
        out["processes_per_sandbox"] = statistics.mean(len(ps) for ps in marked.values())
        out["sandboxes_seen"] = len(marked)
        out["non_sandbox_children"] = len(helpers)  # the fork server
        out["daemon_fds"] = kit.fd_count(pid)
        out.update(mount_view(min(sandbox_pids)))
        out["own_cgroup_kib"] = own_cgroup_kib(sorted(sandbox_pids))
        out.update(reconcile_one_change(daemon, names[n // 2]))
        out.update(status_timings(daemon, status_runs))
        t0 = time.monotonic()
        daemon.stop(timeout=600)
        out["stop_all_s"] = time.monotonic() - t0
        return out
    finally:
        stop_and_clean(daemon)


def stop_and_clean(daemon: Any) -> None:
    """Stop a bench daemon if it still runs, remove what it left and its directory; what could
    not be cleaned is printed, not raised (the figures measured are still worth reporting)."""
    with contextlib.suppress(Exception):
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop(timeout=600)
    problems = kit._teardown(daemon)
    shutil.rmtree(daemon.base, ignore_errors=True)
    if problems:
        print(f"cleanup problems: {str(problems)[:2000]}", file=sys.stderr)


def start_slowly(daemon: Any) -> int:
    """Start the daemon and wait up to 900 s for `daemon.ready` (it serves its API once its
    first reload's starts are under way: with thousands of units on a busy machine, later
    than the kit's start timeout); its PID."""
    daemon.start(wait_ready=False)
    proc = daemon.proc
    kit.wait_for(
        lambda: bool(daemon.events("daemon.ready")) or proc.poll() is not None,
        900, lambda: "daemon not ready after 900 s", interval=1.0,
    )  # fmt: skip
    assert proc.poll() is None, daemon.stderr_path().read_text()[-3000:]
    return int(proc.pid)


def start_deadline(n: int) -> float:
    """How long N starts may take: 900 s, or 0.5 s a unit beyond that (5000 units on a
    machine where other storms run at once: 3855 of them ran after 900 s, 81 % of the CPUs in
    the kernel)."""
    return max(900.0, 0.5 * n)


def start_all(daemon: Any, n: int) -> dict[str, float]:
    """Start the daemon on its N units; the time until all run, and the API's latency meanwhile."""
    probe = StatusProbe(daemon.socket)
    mounts = host_mounts(str(daemon.base))
    t0 = time.monotonic()
    probe.start()
    try:
        pid = start_slowly(daemon)
        out = {"ready_s": time.monotonic() - t0}
        print(f"sandboxd: daemon.ready {out['ready_s']:.1f} s after its start", flush=True)
        assert daemon.proc is not None
        # Poll gently: a status of N units every 50 ms would slow the start being measured.
        wait = start_deadline(n)
        deadline = time.monotonic() + wait
        while True:
            states = [u["state"] for u in daemon.status().values()]
            if states.count("running") >= n:
                break
            failed = states.count("failed")
            if failed:  # e.g. EMFILE: 5000 units under a hard NOFILE limit of 20000
                why = daemon.events("unit.failed")[-1].get("reason")
                raise RuntimeError(f"{failed} sandboxes failed to start, the last: {why}")
            if time.monotonic() > deadline or daemon.proc.poll() is not None:
                counts = running_count(daemon)
                raise RuntimeError(f"{n} sandboxes not running after {wait:.0f} s: {counts}")
            time.sleep(1.0)
        took = time.monotonic() - t0
        cpu = storm_cpu(daemon, pid, n)
    finally:
        probe.stop()
    added = (host_mounts(str(daemon.base)) - mounts) / n
    return {**out, "start_all_s": took, **probe.summary(), "cpu_per_start_ms": cpu,
            "host_mounts_per_start": added}  # fmt: skip


def storm_cpu(daemon: Any, pid: int, n: int) -> dict[str, float]:
    """Where the CPU of the N starts went, ms per start: the daemon (its start-up, loading the
    units, every launch's plan and cgroup, the API answering meanwhile), the fork server, the
    launchers it forked and reaped, and the sandboxes' PID 1s (their set-up before exec). The
    daemon runs one thread of launches: its share bounds how fast a storm can go."""
    sandboxes = {p for ps in kit.pid1s(daemon).values() for p in ps}
    helpers = [c for c in children(pid) if c not in sandboxes]
    parts = {
        "daemon": cpu_seconds(pid),
        "fork server": sum(cpu_seconds(h) for h in helpers),
        "launchers": sum(reaped_cpu_seconds(h) for h in helpers),
        "sandboxes": sum(cpu_seconds(p) for p in sandboxes),
    }
    return cpu_per_start(parts, n)


class StatusProbe:
    """GET /v1/units every INTERVAL s while the N units start (a kept-alive connection, as
    `status` would open one): how long the daemon keeps its API waiting during the storm."""

    INTERVAL = 0.1

    def __init__(self, sock: Path) -> None:
        self.sock, self.samples = sock, list[float]()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(60)

    def _run(self) -> None:
        conn: UnixHTTPConnection | None = None
        while not self._done.wait(self.INTERVAL):
            if conn is None:
                if not self.sock.exists():
                    continue  # the daemon is still starting: nothing to time yet
                conn = UnixHTTPConnection(str(self.sock), timeout=60)
            start = time.perf_counter()
            try:
                conn.request("GET", "/v1/units")
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = None  # not listening yet (or the connection was dropped): reconnect
                continue
            self.samples.append((time.perf_counter() - start) * 1000)
        if conn is not None:
            conn.close()

    def summary(self) -> dict[str, float]:
        xs = sorted(self.samples)
        if not xs:
            return {"storm_status_samples": 0}
        return {"storm_status_samples": len(xs), "storm_status_p50_ms": statistics.median(xs),
                "storm_status_p99_ms": xs[min(len(xs) - 1, int(len(xs) * 0.99))],
                "storm_status_max_ms": xs[-1]}  # fmt: skip


def running_count(daemon: Any) -> str:
    with contextlib.suppress(Exception):
        states = [u["state"] for u in daemon.status().values()]
        return ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states)))
    return "daemon not answering"


def reconcile_one_change(daemon: Any, name: str) -> dict[str, float]:
    old = daemon.status()[name]["pid"]
    daemon.write_unit(name, kit.unit_text([*SLEEPER[:-1], "1000001"], daemon, name))
    t0 = time.monotonic()
    code, body = daemon.request("POST", "/v1/reload")
    api = time.monotonic() - t0
    assert code == 200 and body["restarted"] == [name], body
    kit.wait_for(lambda: daemon.status()[name]["pid"] not in (None, old), 60)
    done = time.monotonic() - t0
    seconds = daemon.events("daemon.reloaded")[-1]["seconds"]
    return {"reload_api_ms": api * 1000, "reload_engine_ms": seconds * 1000,
            "reload_to_restarted_ms": done * 1000}  # fmt: skip


def status_timings(daemon: Any, runs: int) -> dict[str, float]:
    """The control path on these N units, medians: `sandboxctl status` (table, --json) and
    `status UNIT` (a verb that only asks the daemon) as fresh processes; the daemon's list view
    and a `top` frame over a kept-alive connection (GET /v1/units, GET /v1/top: what the daemon
    takes, plus one local round trip)."""
    env = {**os.environ, "SANDBOXD_SOCKET": str(daemon.socket)}
    ctl = str(Path(sys.executable).parent / "sandboxctl")  # the venv's
    one = sorted(daemon.status())[0]
    out: dict[str, float] = {}
    for label, extra in (("status_ms", []), ("status_json_ms", ["--json"]),
                         ("status_unit_ms", [one])):  # fmt: skip
        xs = []
        for _ in range(runs):
            t0 = time.monotonic()
            subprocess.run([ctl, "status", *extra], env=env, check=True, capture_output=True)
            xs.append((time.monotonic() - t0) * 1000)
        out[label] = statistics.median(xs)
    api_runs = max(runs, 50)
    # The daemon's CPU per list request too: on a shared machine the round trip moves with
    # the load (7.5 to 14.3 ms in three quiet runs), the work the daemon does for it less.
    pid = daemon.proc.pid
    c0 = cpu_seconds(pid)
    lists = time_api(daemon.socket, api_runs, "/v1/units")
    out["status_api_cpu_ms"] = (cpu_seconds(pid) - c0) * 1000 / (api_runs + API_WARM_UP)
    out["status_api_ms"] = statistics.median(lists)
    out["status_api_p95_ms"] = sorted(lists)[int(len(lists) * 0.95)]
    out["top_api_ms"] = statistics.median(time_api(daemon.socket, api_runs, "/v1/top"))
    return out


# One `crun run -d` per line on stdin ("run ID" / "delete ID"); prints the wall time in ms.
CRUN_HELPER = r"""
import os, subprocess, sys, time
root, bundle = sys.argv[1], sys.argv[2]
subprocess.run(["umount", "/sys/fs/cgroup/unified"], check=True)
null = open(os.devnull, "r+b")
for line in sys.stdin:
    verb, cid = line.split()
    t = time.perf_counter()
    if verb == "run":
        subprocess.run(["crun", "--root", root, "run", "-d", "-b", bundle, cid],
                       check=True, stdin=null, stdout=null, stderr=null)
    else:
        subprocess.run(["crun", "--root", root, "delete", "-f", cid], check=False,
                       stdin=null, stdout=null, stderr=null)
    print((time.perf_counter() - t) * 1000, flush=True)
"""


# crun's user-namespace variant maps its containers' ids 0..65535 to these host ids: above the
# daemon's default userns_pool (524288-1878982656), so no sandbox of the same run shares them.
CRUN_USERNS_BASE = 1879048192


def crun_density(n: int, userns: bool = False, idle: float = 60.0) -> dict[str, Any]:
    """N `crun run -d` containers: the start time, the memory per container (as
    `sandboxd_density`, its snapshot after the same settle, /proc walks and `idle` window),
    processes and mounts per container. `userns`: each container in its own user namespace
    (one id range for all, as crun's config.json takes it)."""
    if not shutil.which("crun"):
        return {"error": "crun not installed"}
    work = Path(tempfile.mkdtemp(prefix="sandboxd-bench-crun-"))
    work.chmod(0o755)  # a container's root in a user namespace is an unprivileged host uid
    parent = f"sandboxd-bench-crun{'-userns' if userns else ''}-{os.getpid()}"
    out: dict[str, Any] = {"n": n}
    ids = [f"{parent}-{i}" for i in range(n)]
    started: list[str] = []
    proc = subprocess.Popen(
        ["unshare", "-m", sys.executable, "-c", CRUN_HELPER, str(work / "state"), str(work / "b")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        bundle(work, userns)
        out["empty_memcg_kib"] = empty_memcg_kib()
        before = memory_snapshot()
        mounts = host_mounts(str(work))
        crun_cpu = reaped_cpu_seconds(proc.pid)
        t0 = time.monotonic()
        for cid in ids:
            proc.stdin.write(f"run {cid}\n")
            proc.stdin.flush()
            float(proc.stdout.readline())
            started.append(cid)
        out["start_all_s"] = time.monotonic() - t0
        pids = [container_pid(work / "state", cid) for cid in ids]
        out["cpu_per_start_ms"] = cpu_per_start({
            "crun": reaped_cpu_seconds(proc.pid) - crun_cpu,
            "containers": sum(cpu_seconds(p) for p in pids),
        }, n)  # fmt: skip
        out["host_mounts_per_start"] = (host_mounts(str(work)) - mounts) / n
        proc_walk()  # as sandboxd's storm accounting finds its sandboxes
        time.sleep(SETTLE_S)
        proc_walk()  # as sandboxd's finds its fork server
        time.sleep(idle)
        after = memory_snapshot()
        out.update(breakdown(before, after, n, memcgs_under(f"{parent}-*")))
        side_anon(out, pids)
        print_breakdown("crun" + (" (userns)" if userns else ""), out)
        out["processes_per_sandbox"] = processes_per_container(work / "state", ids)
        out.update(mount_view(container_pid(work / "state", ids[0])))
        pids = [container_pid(work / "state", cid) for cid in ids[:200]]
        out["own_cgroup_kib"] = own_cgroup_kib(pids)
    finally:
        t0 = time.monotonic()
        for cid in started:
            proc.stdin.write(f"delete {cid}\n")
            proc.stdin.flush()
            proc.stdout.readline()
        out["stop_all_s"] = time.monotonic() - t0
        proc.stdin.close()
        proc.wait()
        left = remove_cgroup_parent(parent)
        if left:
            print(f"crun cleanup problems: {left}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    return out


CRUN_NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")


def bundle(work: Path, userns: bool) -> None:
    b = work / "b"
    b.mkdir()
    subprocess.run(["crun", "spec"], cwd=b, check=True)
    config = json.loads((b / "config.json").read_text())
    config["process"].update(args=["/bin/sleep", "1000000"], terminal=False)
    config["root"] = {"path": str(work / "rootfs"), "readonly": True}
    linux = config["linux"]
    linux["namespaces"] = [{"type": t} for t in CRUN_NAMESPACES]
    if userns:
        linux["namespaces"].append({"type": "user"})
        ids = [{"containerID": 0, "hostID": CRUN_USERNS_BASE, "size": 65536}]
        linux["uidMappings"], linux["gidMappings"] = ids, ids
    linux["resources"] = {"memory": {"limit": 256 << 20}, "pids": {"limit": 1024}}
    # No cgroupsPath: crun's default is /<container id>, and our ids carry the run's prefix.
    (b / "config.json").write_text(json.dumps(config))
    rootfs = work / "rootfs"
    for d in ("bin", "etc", "proc", "dev", "sys", "tmp", "run"):
        (rootfs / d).mkdir(parents=True)
    shutil.copy(BUSYBOX, rootfs / "bin/busybox")
    (rootfs / "bin/sleep").symlink_to("busybox")


def container_pid(state: Path, cid: str) -> int:
    return int(json.loads((state / cid / "status").read_text())["pid"])


def processes_per_container(state: Path, ids: list[str]) -> float:
    pids = []
    for cid in ids[:50]:
        with contextlib.suppress(OSError, ValueError, KeyError):
            pids.append(container_pid(state, cid))
    # Each container: its PID 1 only; count the processes whose parent is a container's PID 1
    # or that share its parent (a monitor would be the parent).
    extra = sum(len(children(p)) for p in pids)
    return 1 + extra / max(1, len(pids))


def remove_cgroup_parent(prefix: str) -> list[str]:
    """Remove the cgroups crun left for our containers (ids start with prefix); report them."""
    problems = []
    for top in Path("/sys/fs/cgroup").glob(f"*/{prefix}-*"):
        if top.is_dir():
            problems.append(f"left by crun delete: {top}")
            for sub in sorted([*top.rglob("*"), top], key=lambda p: -len(p.parts)):
                if sub.is_dir():
                    with contextlib.suppress(OSError):
                        sub.rmdir()
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--crun-n", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--status-runs", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps({"sandboxd": sandboxd_density(args.n, args.idle, args.status_runs)},
                     indent=1))  # fmt: skip
    if args.crun_n:
        print(json.dumps({"crun": crun_density(args.crun_n, idle=args.idle)}, indent=1))
        print(json.dumps({"crun (userns)": crun_density(args.crun_n, userns=True, idle=args.idle)},
                         indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
