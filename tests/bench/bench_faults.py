"""Fault figures: supervision while the log disk stalls, and the daemon's memory per unit.

    sudo .venv/bin/python -m tests.bench.bench_faults [--stall 10] [--units 1000]

1. Stall: a daemon whose log dir is a FUSE filesystem with stalling writes
   (tests/support/stallfs.py) runs a few chatty units; writes stall for --stall seconds, during
   which `GET /v1/units` is timed back to back (p50 / p99 / max), and a unit is SIGKILLed and
   the time until it runs again is taken. Before the stall the same latency is measured, for
   comparison.
2. Memory: a daemon (and its fork server) in a memory cgroup of its own, without a limit: its
   anonymous memory with no unit, then with --units running `sleep` units; the difference / N
   is the memory per unit. The README's MemoryMax recommendation comes from these figures.

Everything is cleaned up: the daemon stops its units, the filesystem is unmounted, the cgroup
removed; only PIDs this run started are touched.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import time
from typing import Any

from tests.support import kit
from tests.support.memcg import daemon_memcg
from tests.support.stallfs import fuse_missing, stalling_fs

CHATTY = ["/bin/sh", "-c", "while :; do head -c 65536 /dev/zero; done"]


def _latencies(daemon: Any, seconds: float) -> list[float]:
    out: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        began = time.monotonic()
        daemon.status()
        out.append((time.monotonic() - began) * 1000)
    return out


def pct(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def stall(seconds: float, chatty: int = 4) -> dict[str, Any]:
    missing = fuse_missing()
    if missing is not None:
        return {"error": missing}
    daemon = kit.new_daemon("bench-stall")
    out: dict[str, Any] = {}
    try:
        with stalling_fs(daemon.logs) as fs:
            for i in range(chatty):
                daemon.write_unit(f"chatty{i}", kit.unit_text(CHATTY, daemon, f"chatty{i}"))
            victim = "victim"
            daemon.write_unit(victim, kit.unit_text(["/bin/sleep", "100000"], daemon, victim,
                                                    restart={"delay": "0s"}))  # fmt: skip
            daemon.start()
            kit.wait_for(lambda: all(u["state"] == "running" for u in daemon.status().values()))
            before = _latencies(daemon, 2.0)
            rss = kit.rss_kib(daemon.proc.pid)
            fs.stall()
            began = time.monotonic()
            pid = daemon.status()[victim]["pid"]
            os.kill(pid, signal.SIGKILL)
            kit.wait_for(lambda: daemon.status()[victim]["pid"] not in (None, pid))
            out["restart_during_stall_ms"] = (time.monotonic() - began) * 1000
            during = _latencies(daemon, max(0.0, seconds - (time.monotonic() - began)))
            out["rss_growth_mb"] = (kit.rss_kib(daemon.proc.pid) - rss) / 1024
            fs.resume()
            out["dropped_mb"] = sum(
                u["output_dropped_bytes"] for u in (daemon.unit(n) for n in daemon.status())
            ) / (1 << 20)
            out["before"] = (statistics.median(before), pct(before, 0.99), max(before))
            out["during"] = (statistics.median(during), pct(during, 0.99), max(during))
            out["samples"] = len(during)
            daemon.stop(120)
    finally:
        problems = kit._teardown(daemon)
        shutil.rmtree(daemon.base, ignore_errors=True)
        if problems:
            out["error"] = f"cleanup: {problems}"
    return out


def memory(units: int) -> dict[str, Any]:
    daemon = kit.new_daemon("bench-mem")
    out: dict[str, Any] = {"units": units}
    try:
        with daemon_memcg(f"sandboxd-bench-mem-{daemon.tag}") as cg:
            try:
                daemon.start(wrapper=cg.wrapper)  # no unit yet: the base
                out["base_mb"] = settled(cg) / (1 << 20)
                daemon.stop(60)
                for i in range(units):
                    name = f"m{i}"
                    daemon.write_unit(name, kit.unit_text(["/bin/sleep", "100000"], daemon, name))
                daemon.start(wrapper=cg.wrapper)
                kit.wait_for(
                    lambda: sum(u["state"] == "running" for u in daemon.status().values()) == units,
                    900,
                )
                for _ in range(5):  # per-request buffers: status of every unit
                    daemon.status()
                out["loaded_mb"] = settled(cg) / (1 << 20)
                out["peak_mb"] = (cg.peak() or 0) / (1 << 20)
                out["per_unit_kib"] = (out["loaded_mb"] - out["base_mb"]) * 1024 / units
            finally:
                if daemon.proc is not None and daemon.proc.poll() is None:
                    daemon.stop(900)
    finally:
        problems = kit._teardown(daemon)
        shutil.rmtree(daemon.base, ignore_errors=True)
        if problems:
            out["error"] = f"cleanup: {problems}"
    return out


def settled(cg: Any, rounds: int = 10) -> int:
    """The cgroup's anonymous memory once it stops changing (allocator settling after work)."""
    last = cg.anon()
    for _ in range(rounds):
        time.sleep(0.5)  # a measurement interval, not a wait for a condition
        now = cg.anon()
        if abs(now - last) < 256 << 10:
            return int(now)
        last = now
    return int(last)


def rows(stall_s: float, units: int) -> list[tuple[str, str, str]]:
    found: list[tuple[str, str, str]] = []
    s = stall(stall_s)
    if "error" in s and "during" not in s:
        found.append(("log disk stalled: status latency", "not measured", s["error"]))
    else:
        p50, p99, worst = s["during"]
        b50, b99, _ = s["before"]
        found += [
            (f"log disk stalled {stall_s:.0f} s: status p50 / p99 / max",
             f"{p50:.1f} / {p99:.1f} / {worst:.1f} ms",
             f"{s['samples']} calls; before the stall {b50:.1f} / {b99:.1f} ms"),
            ("log disk stalled: SIGKILLed unit running again",
             f"{s['restart_during_stall_ms']:.0f} ms", "restart delay 0"),
            ("log disk stalled: daemon RSS growth", f"{s['rss_growth_mb']:.1f} MB",
             f"{s['dropped_mb']:.0f} MB of output dropped and counted"),
        ]  # fmt: skip
    m = memory(units)
    if "loaded_mb" not in m:
        found.append(("daemon memory", "not measured", m.get("error", "")))
    else:
        found += [
            ("daemon memory, no unit (anon, with fork server)", f"{m['base_mb']:.1f} MB", ""),
            (f"daemon memory, {units} units", f"{m['loaded_mb']:.1f} MB",
             f"peak with page cache {m['peak_mb']:.1f} MB"),
            ("daemon memory per unit", f"{m['per_unit_kib']:.0f} KiB",
             "README: MemoryMax = 64 MiB + 64 KiB per unit"),
        ]  # fmt: skip
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_faults", description=__doc__)
    parser.add_argument("--stall", type=float, default=10.0)
    parser.add_argument("--units", type=int, default=1000)
    args = parser.parse_args()
    for what, figure, note in rows(args.stall, args.units):
        print(f"{what:55}{figure:28}{note}")


if __name__ == "__main__":
    main()
