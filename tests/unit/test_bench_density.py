"""The density bench's memory report: the goal rows against crun with and without a user
namespace, the daemon's share told apart, and the slab caches side by side."""

from __future__ import annotations

import os
from typing import Any

from tests.bench import bench_density
from tests.bench.__main__ import memory_rows


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


def test_a_crun_side_that_did_not_run_is_not_measured_never_met() -> None:
    rows = memory_rows(10, side(900, {}, daemon_anon_kib=0, mounts=1, own_superblocks=1),
                       {"crun": {"error": "crun not installed"}})  # fmt: skip
    assert [r.verdict for r in rows[:2]] == ["not measured", "not measured"]
    # A crun run with another N is not comparable per sandbox either.
    other_n = memory_rows(10, side(900, {}, daemon_anon_kib=0, mounts=1, own_superblocks=1),
                          {"crun": side(1000, {}, n=20)})  # fmt: skip
    assert other_n[0].verdict == "not measured"


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
    assert bench_density.slab_table({"crun": {"error": "crun not installed"}}) == []


def test_a_process_sees_its_own_mounts_and_no_filesystem_of_its_own() -> None:
    view = bench_density.mount_view(os.getpid())  # pytest shares the host's mount namespace
    assert view["mounts"] > 0 and view["own_superblocks"] == 0
