"""`sudo .venv/bin/python -m tests.bench`: sandboxd against its peers, one table.

Installs the peers it compares with from Debian when missing (crun, runc, bubblewrap,
systemd-container), then runs, on this machine in this run:
  1. launch latency of /bin/true, full isolation, >= 50 interleaved runs: sandboxd vs crun,
     runc, bwrap, systemd-nspawn (bench_peers.py);
  2. OOM kill -> restarted exec (delay 0) and `sandboxctl reload` -> new unit running
     (bench_oom_restart.py);
  3. density: N idle sandboxes under one daemon (start time, daemon RSS and idle CPU, host
     memory per sandbox, processes per sandbox), reload with one change and `sandboxctl status`
     on those N units; the same N with `crun run -d` (bench_density.py);
  4. faults: `status` latency p50 / p99 / max and a SIGKILLed unit's restart while the log disk
     stalls for --stall seconds (a FUSE filesystem), the daemon's memory with no unit and with
     --density units, and per unit (bench_faults.py).
Goals checked in the last column: launch median <= crun's; daemon < 150 MB RSS and < 2% of a
core idle with 1000 sandboxes; no per-sandbox helper process.

Options: -n RUNS (50), --density N (1000), --crun-n N (= --density), --idle SECONDS (60),
--cycles N (20), --stall SECONDS (10), --skip-install, --only peers,oom,density,faults.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.bench import bench_density, bench_faults, bench_oom_restart, bench_peers

PEERS = {
    "crun": "crun", "runc": "runc", "bwrap": "bubblewrap", "systemd-nspawn": "systemd-container"
}  # fmt: skip


def install_peers() -> None:
    missing = sorted({pkg for tool, pkg in PEERS.items() if not shutil.which(tool)})
    if not missing:
        return
    print(f"installing {' '.join(missing)} ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if subprocess.run(cmd, env=env, check=False, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=False, capture_output=True)
        proc = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"could not install {missing}: {proc.stderr.strip()[-300:]}", file=sys.stderr)


def machine() -> str:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.machine(),
    )
    cgroups = "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1/hybrid"
    load = os.getloadavg()[0]
    return (
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} x {model}, "
        f"{mem / 1048576:.0f} GB RAM, kernel {platform.release()}, cgroup {cgroups}, "
        f"load {load:.1f} at start"
    )


def fmt_ms(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    return f"{statistics.median(xs):.1f} / {bench_oom_restart.p95(xs):.1f} ms"


def helpers_ok(d: dict[str, Any]) -> bool:
    return bool(d["processes_per_sandbox"] == 1 and d["non_sandbox_children"] <= 1)


def main() -> None:  # noqa: PLR0912 - one linear report
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("-n", type=int, default=50)
    parser.add_argument("--density", type=int, default=1000)
    parser.add_argument("--crun-n", type=int, default=None)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--stall", type=float, default=10.0)
    parser.add_argument("--skip-install", action="store_true")
    parser.add_argument("--only", default="peers,oom,density,faults")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("python -m tests.bench: needs root (namespaces, cgroups, peers)")
    only = set(args.only.split(","))
    if not args.skip_install:
        install_peers()
    header = machine()
    rows: list[tuple[str, str, str]] = []  # what, figure, goal/comparison

    if "peers" in only:
        results, skipped = bench_peers.measure(args.n)
        print("\n".join(bench_peers.report(results, skipped, args.n)), flush=True)
        ours = statistics.median(results["sandboxd"]) if "sandboxd" in results else None
        for name, xs in results.items():
            note = ""
            if ours is not None and name != "sandboxd":
                note = f"sandboxd/{name} = {ours / statistics.median(xs):.2f}x"
            if name == "sandboxd" and "crun" in results:
                goal = ours is not None and ours <= statistics.median(results["crun"])
                note = f"goal <= crun median: {'met' if goal else 'MISSED'}"
            rows.append((f"launch /bin/true: {name} (median / p95)", fmt_ms(xs), note))
        rows += [(f"launch /bin/true: {n}", "not measured", why) for n, why in skipped.items()]

    if "oom" in only:
        for what, xs in bench_oom_restart.run(args.cycles).items():
            rows.append((what.strip() + " (median / p95)", fmt_ms(xs), f"{len(xs)} samples"))

    if "density" in only:
        n = args.density
        d: dict[str, Any] = bench_density.sandboxd_density(n, args.idle, 10)
        rows += [
            (f"density: start {n} sandboxes, sandboxd", f"{d['start_all_s']:.1f} s",
             f"{n / d['start_all_s']:.0f} starts/s"),
            (f"density: daemon RSS with {n}", f"{d['rss_mb']:.1f} MB",
             f"goal < 150 MB: {'met' if d['rss_mb'] < 150 else 'MISSED'}; fork server "
             f"{d['forkserver_rss_mb']:.1f} MB"),
            (f"density: daemon idle CPU ({d['idle_window_s']:.0f} s)",
             f"{d['idle_cpu_pct']:.2f} % of a core",
             f"goal < 2%: {'met' if d['idle_cpu_pct'] < 2 else 'MISSED'}"),
            ("density: host memory per sandbox, sandboxd",
             f"{d['host_kib_per_sandbox']:.0f} KiB", "MemAvailable delta / N (noisy)"),
            ("density: processes per sandbox, sandboxd", f"{d['processes_per_sandbox']:.2f}",
             f"{d['non_sandbox_children']} other child of the daemon (the fork server); "
             f"goal: no per-sandbox helper: {'met' if helpers_ok(d) else 'MISSED'}"),
            (f"reload, {n} units, one changed: API answer", f"{d['reload_api_ms']:.0f} ms",
             f"engine {d['reload_engine_ms']:.0f} ms; changed unit restarted after "
             f"{d['reload_to_restarted_ms']:.0f} ms"),
            (f"sandboxctl status on {n} units", f"{d['status_ms']:.0f} ms",
             f"--json {d['status_json_ms']:.0f} ms; API alone {d['status_api_ms']:.0f} ms"),
            (f"density: stop {n} sandboxes", f"{d['stop_all_s']:.1f} s", "daemon SIGTERM"),
        ]  # fmt: skip
        crun_n = args.crun_n if args.crun_n is not None else n
        if crun_n:
            c = bench_density.crun_density(crun_n)
            if "error" in c:
                rows.append(("density: crun", "not measured", c["error"]))
            else:
                rows += [
                    (f"density: start {crun_n} containers, crun run -d",
                     f"{c['start_all_s']:.1f} s",
                     f"{crun_n / c['start_all_s']:.0f} starts/s (sequential CLI calls)"),
                    ("density: host memory per container, crun",
                     f"{c['host_kib_per_sandbox']:.0f} KiB", "MemAvailable delta / N (noisy)"),
                    ("density: processes per container, crun",
                     f"{c['processes_per_sandbox']:.2f}", "no monitor (conmon would add 1)"),
                    (f"density: delete {crun_n} containers, crun", f"{c['stop_all_s']:.1f} s",
                     "crun delete -f, sequential"),
                ]  # fmt: skip

    if "faults" in only:
        rows += bench_faults.rows(args.stall, args.density)

    width = max(len(r[0]) for r in rows) + 2
    fig = max(len(r[1]) for r in rows) + 2
    print(f"\nsandboxd vs peers — {header}")
    print(f"{'measure':{width}}{'figure':{fig}}notes")
    print("-" * (width + fig + 40))
    for what, figure, note in rows:
        print(f"{what:{width}}{figure:{fig}}{note}")


if __name__ == "__main__":
    main()
