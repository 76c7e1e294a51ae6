"""The density bench's memory report: the goal rows against crun with and without a user
namespace, the daemon's share told apart, and the slab caches side by side."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.bench import bench_density, proc_cpu
from tests.bench.__main__ import memory_rows, storm_cpu_rows
from tests.support.requires import requires_root
from tests.support.waiting import wait_for


def side(host: float, slab: dict[str, float], n: int = 10, **extra: Any) -> dict[str, Any]:
    meminfo = dict.fromkeys(bench_density.MEMINFO_PARTS, 1.0)
    return {"n": n, "host_kib_per_sandbox": host, "slab_delta_kib": slab,
            "slab_total_kib_per_sandbox": sum(slab.values()), "meminfo_kib_per_sandbox": meminfo,
            **extra}  # fmt: skip


def test_memory_is_held_to_crun_with_and_without_a_user_namespace() -> None:
    ours = side(900, {}, daemon_anon_kib=3000, mounts=30, own_superblocks=9)
    crun = side(1000, {}, mounts=25, own_superblocks=9)
    rows = memory_rows(10, ours, {"crun": crun, "crun (userns)": side(800, {})})
    by_what = {r.what: r for r in rows}
    met = by_what["density: host memory per sandbox <= crun"]
    assert (met.verdict, met.figure, met.goal) == ("MET", "900 KiB vs 1000 KiB", "<= 1x crun")
    assert "no user namespace" not in met.note and "cgroup ns" in met.note  # what crun ran with
    assert by_what["density: host memory per sandbox <= crun (userns)"].verdict == "MISSED"
    daemon = by_what["density: daemon + fork server heap per sandbox"]
    assert daemon.figure == "300 KiB" and "without it 600 KiB" in daemon.note
    kernel = by_what["density: kernel memory + tmpfs per sandbox"]
    assert kernel.figure == "sandboxd 5 KiB" and kernel.note.startswith("crun 5 KiB, crun (userns)")
    mounts = by_what["density: mounts / own superblocks per sandbox"]
    assert mounts.figure == "sandboxd 30 / 9" and mounts.note == "crun 25 / 9"
    assert not any("own memory cgroup" in r.what for r in rows), "not measured: no row"
    charged = {"usage": 296.0, "kernel": 236.0, "shmem": 8.0}
    ours["own_cgroup_kib"], crun["own_cgroup_kib"] = charged, {**charged, "usage": 180.0}
    rows = memory_rows(10, ours, {"crun": crun, "crun (userns)": side(800, {})})
    own = next(r for r in rows if "own memory cgroup" in r.what)
    assert own.figure == "sandboxd 296 KiB (kernel 236, tmpfs 8)"
    assert own.note.startswith("crun 180 KiB (kernel 236, tmpfs 8), not blurred")


def test_a_crun_side_that_did_not_run_is_not_measured_never_met() -> None:
    rows = memory_rows(10, side(900, {}, daemon_anon_kib=0, mounts=1, own_superblocks=1),
                       {"crun": {"error": "crun not installed"}})  # fmt: skip
    assert [r.verdict for r in rows[:2]] == ["not measured", "not measured"]
    # A crun run with another N is not comparable per sandbox either.
    other_n = memory_rows(10, side(900, {}, daemon_anon_kib=0, mounts=1, own_superblocks=1),
                          {"crun": side(1000, {}, n=20)})  # fmt: skip
    assert other_n[0].verdict == "not measured"
    # Other processes freed more than the sandboxes took: no verdict either way.
    freed = memory_rows(10, side(-50, {}, daemon_anon_kib=0, mounts=1, own_superblocks=1),
                        {"crun": side(1000, {})})  # fmt: skip
    assert freed[0].verdict == "not measured" and freed[0].note.startswith("MemAvailable rose")


def test_the_slab_table_shows_a_cache_either_side_grew_with_both_columns() -> None:
    ours = side(900, {"kmalloc-1k": 270.0, "mnt_cache": 13.0, "dentry": 1.0})
    crun = side(1000, {"kmalloc-1k": 275.0, "sock_inode_cache": 20.0})
    lines = bench_density.slab_table({"sandboxd": ours, "crun": crun}, top=3)
    assert lines[0].split()[-2:] == ["sandboxd", "crun"]
    body = {line.rsplit(None, 2)[0].strip(): line.split()[-2:] for line in lines[2:]}
    assert body["kmalloc-1k"] == ["270.0", "275.0"]
    assert body["sock_inode_cache"] == ["0.0", "20.0"]  # crun's alone still shows
    assert body["mnt_cache"] == ["13.0", "0.0"]
    assert "dentry" not in body  # below the top 3 on both sides
    assert body["MemAvailable delta"] == ["900.0", "1000.0"]
    assert "an empty memory cgroup" not in body  # measured on neither side
    assert bench_density.slab_table({"crun": {"error": "crun not installed"}}) == []
    ours["empty_memcg_kib"], crun["empty_memcg_kib"] = 300.0, 310.0
    last = bench_density.slab_table({"sandboxd": ours, "crun": crun}, top=3)[-1]
    assert last.split()[-2:] == ["300.0", "310.0"] and last.startswith("an empty memory cgroup")


@requires_root
def test_an_empty_memory_cgroup_costs_slab_and_leaves_no_cgroup_behind() -> None:
    def left() -> set[Path]:  # where it makes them on cgroup v1, and on v2
        return {*Path("/sys/fs/cgroup").glob("sandboxd-bench-memcg-*"),
                *Path("/sys/fs/cgroup/memory").glob("sandboxd-bench-memcg-*")}  # fmt: skip

    before = left()
    kib = bench_density.empty_memcg_kib(count=4)
    # None: no memory controller here to make one in. Its size is not asserted: other
    # processes' slab moves meanwhile (the bench takes it as a figure, not a verdict).
    assert kib is None or isinstance(kib, float)
    assert left() == before


def test_a_process_sees_its_own_mounts_and_no_filesystem_of_its_own() -> None:
    view = bench_density.mount_view(os.getpid())  # pytest shares the host's mount namespace
    assert view["mounts"] > 0 and view["own_superblocks"] == 0


@requires_root
def test_an_ipc_namespace_counts_its_mqueue_filesystem_mounted_or_not(tmp_path: Path) -> None:
    """A new IPC namespace makes an mqueue filesystem whether or not it is mounted: crun
    mounts it, sandboxd does not, and each side counts it once (mount_view)."""

    def sleeping(pid: int) -> bool:  # exec'ed: unshare's namespaces and mounts are made
        return Path(f"/proc/{pid}/comm").read_text() == "sleep\n"

    mount = f"mount --make-rprivate / && mount -t mqueue none {tmp_path} && "
    for script in ("exec sleep 60", mount + "exec sleep 60"):
        proc = subprocess.Popen(["unshare", "-im", "sh", "-c", script])
        try:
            wait_for(lambda p=proc.pid: sleeping(p), 10)  # type: ignore[misc]
            view = bench_density.mount_view(proc.pid)
        finally:
            proc.kill()
            proc.wait()
        assert view["own_superblocks"] == 1, (script, view)


def test_memory_cgroups_made_by_others_meanwhile_withhold_the_memory_verdict() -> None:
    before = {"memcgs": 100}
    assert bench_density.others_memcgs(before, {"memcgs": 111}, 10) == 1
    assert bench_density.others_memcgs(before, {"memcgs": 60}, 10) == -50
    assert bench_density.others_memcgs({"memcgs": None}, {"memcgs": 111}, 10) is None
    assert (bench_density.memory_cgroups() or 0) >= 0
    ours = side(900, {}, daemon_anon_kib=0, mounts=1, own_superblocks=1, others_memcgs=1)
    crun = side(1000, {}, others_memcgs=-40)
    rows = memory_rows(10, ours, {"crun": crun, "crun (userns)": side(800, {})})
    assert rows[0].verdict == "not measured" and "-40 memory cgroups" in rows[0].note
    crun["others_memcgs"] = 2  # within the slack: dying cgroups the kernel freed meanwhile
    assert memory_rows(10, ours, {"crun": crun})[0].verdict == "MET"


def test_the_starts_cpu_is_split_by_process_per_start_beside_cruns() -> None:
    cpu = bench_density.cpu_per_start({"daemon": 6.0, "fork server": 1.0, "launchers": 3.0}, 1000)
    assert cpu == {"daemon": 6.0, "fork server": 1.0, "launchers": 3.0, "total": 10.0}
    ours = {"cpu_per_start_ms": cpu, "host_mounts_per_start": 1.0}
    crun = {"cpu_per_start_ms": {"crun": 8.0, "containers": 0.5, "total": 8.5},
            "host_mounts_per_start": 0.0}  # fmt: skip
    used, mounts = storm_cpu_rows(ours, crun)
    assert used.figure == "10.0 ms" and used.goal == ""  # context, no verdict
    assert used.note == "daemon 6.0, fork server 1.0, launchers 3.0; crun 8.5 ms"
    assert mounts.figure == "sandboxd 1.00, crun 0.00"
    # No crun side (not installed, or another N): sandboxd's figures alone.
    alone = storm_cpu_rows(ours, {})
    assert "crun" not in alone[0].note and alone[1].figure == "sandboxd 1.00"
    assert storm_cpu_rows({}, crun) == []  # an older result without the split


def test_host_mounts_are_counted_below_a_directory_and_reaped_cpu_is_read(
    tmp_path: Path,
) -> None:
    assert bench_density.host_mounts() >= bench_density.host_mounts("/proc") > 0
    assert bench_density.host_mounts(str(tmp_path)) == 0  # a plain directory holds none
    assert bench_density.host_mounts("/pro") == 0  # whole components: /proc is not below it
    assert bench_density.reaped_cpu_seconds(os.getpid()) >= 0.0


@requires_root
def test_a_sandboxs_own_memory_cgroup_charges_are_read_from_its_pid() -> None:
    # This process's own memory cgroup stands in for a sandbox's: it has one, and it is
    # charged for at least this interpreter's pages.
    charged = bench_density.own_cgroup_kib([os.getpid()])
    assert set(charged) == {"usage", "kernel", "shmem"} and charged["usage"] > 0
    assert bench_density.own_cgroup_kib([]) == {}


def test_a_live_processs_cpu_is_read_below_a_clock_tick() -> None:
    # `sleep` runs well under one tick (10 ms) before it sleeps: /proc/PID/stat's utime +
    # stime round that down to 0 per process, schedstat's nanoseconds keep it, so a sum over
    # a thousand sandboxes' PID 1s counts them.
    proc = subprocess.Popen(["sleep", "60"])
    try:
        wait_for(lambda: Path(f"/proc/{proc.pid}/wchan").read_text() != "0", 10)
        assert 0 < proc_cpu.cpu_seconds(proc.pid) < 1.0  # seconds, not ticks read as seconds
    finally:
        proc.kill()
        proc.wait()
    # This process's live threads: never more than the kernel's own total for it.
    assert 0 < proc_cpu.cpu_seconds(os.getpid()) <= time.process_time()
