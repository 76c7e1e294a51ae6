"""`sudo .venv/bin/python -m tests.bench`: sandboxd against its peers, one table.

Installs the peers it compares with from Debian when missing (crun, runc, bubblewrap,
systemd-container), then runs, on this machine in this run:
  1. launch latency of /bin/true, full isolation, >= 50 interleaved runs: sandboxd vs crun,
     runc, bwrap, systemd-nspawn (bench_peers.py);
  2. OOM kill -> restarted exec and crash (exit 1) -> restarted exec (delay 0), and
     `sandboxctl reload` -> new unit running (bench_oom_restart.py);
  3. control: `sandboxctl status` and `status UNIT` end to end, fresh processes, against the
     API server on a fake controller with --density units (bench_status.py);
  4. density: N idle sandboxes under one daemon (start time, daemon RSS and idle CPU, host
     memory per sandbox, processes per sandbox), reload with one change, `sandboxctl status`
     and `status UNIT` end to end, the daemon's list view and `top` frame on those N units;
     the same N with `crun run -d`, then again with crun in a user namespace (as sandboxd's
     default units are); the slab caches that grew most, side by side, KiB per sandbox; the
     daemon's heap per sandbox; mounts and own filesystems per sandbox; GET /v1/units
     p50 / p99 / max while the N start, goal p99 < 100 ms; the starts' CPU by process (the
     daemon, the fork server, its launchers, the sandboxes' PID 1s) beside crun's, and the
     host mounts each start added (bench_density.py);
  5. scale: --scale N (5000) idle sandboxes under one daemon, held to issue 23's goals at that
     size: daemon RSS < 250 MB, idle CPU < 2 % of a core over 30 s (ns from
     /proc/PID/task/*/schedstat), `sandboxctl status` < 150 ms end to end, reload with one
     changed file < 100 ms (the API's answer); with the start time, the list view and
     `status UNIT` as context (bench_density.py, as the density section; a few minutes at 5000);
  6. faults: `status` latency p50 / p99 / max and a SIGKILLed unit's restart while the log disk
     stalls for --stall seconds (a FUSE filesystem), the daemon's memory with no unit and with
     --density units, and per unit (bench_faults.py).
Each row with a goal (issue 23's, else issue 9's and 26's; tests/bench/goals.py) says MET or
MISSED: launch median <= 0.5x crun's; 1000 starts in <= 0.5x the time of 1000 `crun run -d`;
host memory per sandbox <= crun's; daemon < 150 MB RSS and < 2% of a core idle; no per-sandbox
helper; OOM kill -> restarted exec p95 < 25 ms, crash -> restarted exec p95 < 20 ms; `status`
on 1000 units < 50 ms and a verb that only asks the daemon < 40 ms end to end; the daemon's
list view < 10 ms and a `top` frame < 50 ms at 1000 units; GET /v1/units p99 < 100 ms while
the 1000 start.

Options: -n RUNS (50), --density N (1000), --crun-n N (= --density), --idle SECONDS (60),
--scale N (5000), --cycles N (20), --stall SECONDS (10), --skip-install,
--only peers,oom,control,density,scale,faults (scale only when named), --trace (with peers:
each stage of a sandboxd launch, median and p95 over -n traced launches, bench_peers.py; with
oom: each hop of a restart, from the OOM kill or the crash to the next exec, over --cycles
traced restarts of each, the daemon's SANDBOXD_TRACE_RESTARTS, bench_oom_restart.py),
--markdown FILE (the table, with the
date, machine and load, and with --trace the stages, replaces what is between
`<!-- bench:begin -->` and `<!-- bench:end -->` in FILE).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.bench import (
    bench_density,
    bench_faults,
    bench_oom_restart,
    bench_peers,
    bench_status,
    goals,
)
from tests.bench.goals import Row, at_most_times, cost_at_most, under

SECTIONS = ("peers", "oom", "control", "density", "scale", "faults")
OOM_P95_GOAL_MS = 25.0  # OOM kill -> restarted exec, p95 (issue 23)
CRASH_P95_GOAL_MS = 20.0  # crash (exit 1) -> restarted exec, p95 (issue 23)
P95_GOALS_MS = {
    "OOM kill -> restarted exec": OOM_P95_GOAL_MS,
    "crash (exit 1) -> restarted exec": CRASH_P95_GOAL_MS,
}
USERNS_COST_SHARE = 0.2  # the default user namespace's part of a launch, at most (issue 27)
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


def peer_rows(n: int) -> list[Row]:
    results, skipped = bench_peers.measure(n)
    print("\n".join(bench_peers.report(results, skipped, n)), flush=True)
    med = {name: statistics.median(xs) for name, xs in results.items()}
    rows = []
    for name, xs in results.items():
        what = f"launch /bin/true: {name} (median / p95)"
        if name == "sandboxd":
            rows.append(at_most_times(what, fmt_ms(xs), med[name], ("crun", med.get("crun")), 0.5))
        elif name == bench_peers.HOST_IDS:
            rows.append(Row(what, fmt_ms(xs), note='user_namespace = "host"'))
        else:
            ratio = (
                f"sandboxd/{name} = {med['sandboxd'] / med[name]:.2f}x" if "sandboxd" in med else ""
            )
            rows.append(Row(what, fmt_ms(xs), note=ratio))
    with_userns, without = med.get("sandboxd"), med.get(bench_peers.HOST_IDS)
    rows.append(
        cost_at_most("userns cost of a launch (median)", with_userns, without, USERNS_COST_SHARE)
    )
    return rows + [
        Row(f"launch /bin/true: {name}", "not measured", note=why) for name, why in skipped.items()
    ]


def oom_rows(cycles: int) -> list[Row]:
    rows = []
    for measure, xs in bench_oom_restart.run(cycles).items():
        what = measure.strip() + " (median / p95)"
        goal = next((g for start, g in P95_GOALS_MS.items() if what.startswith(start)), None)
        if goal is not None:
            p95 = bench_oom_restart.p95(xs) if xs else None
            row = under(what, p95, goal, "ms", f"p95 held to the goal; {len(xs)} samples")
            rows.append(Row(row.what, fmt_ms(xs), f"p95 {row.goal}", row.met, row.note))
        else:
            rows.append(Row(what, fmt_ms(xs), note=f"{len(xs)} samples"))
    return rows


STORM_STATUS_P99_GOAL_MS = 100.0  # GET /v1/units while the N units start (issue 23)


def storm_row(n: int, d: dict[str, Any]) -> Row:
    what = f"density: GET /v1/units while {n} start (p50 / p99 / max)"
    if not d.get("storm_status_samples"):
        return Row(what, "not measured", note="no answer during the start")
    figure = (f"{d['storm_status_p50_ms']:.0f} / {d['storm_status_p99_ms']:.0f} / "
              f"{d['storm_status_max_ms']:.0f} ms")  # fmt: skip
    row = under(what, d["storm_status_p99_ms"], STORM_STATUS_P99_GOAL_MS, "ms",
                f"p99; {d['storm_status_samples']} requests, one every 0.1 s")  # fmt: skip
    return Row(row.what, figure, f"p99 {row.goal}", row.met, row.note)


def storm_cpu_rows(d: dict[str, Any], crun: dict[str, Any]) -> list[Row]:
    """Where the starts' CPU went, by process, ms per start (bench_density.storm_cpu), beside
    crun's (the `crun` processes and their containers); and the host's mounts each start
    added, which every later launch copies with its mount namespace. Context: CPU time moves
    less with other load than the start's wall time."""
    cpu = d.get("cpu_per_start_ms")
    if not cpu:
        return []
    theirs = crun.get("cpu_per_start_ms")
    parts = ", ".join(f"{k} {v:.1f}" for k, v in cpu.items() if k != "total")
    note = parts + (f"; crun {theirs['total']:.1f} ms" if theirs else "")
    mounts = f"sandboxd {d['host_mounts_per_start']:.2f}"
    if crun.get("host_mounts_per_start") is not None:
        mounts += f", crun {crun['host_mounts_per_start']:.2f}"
    return [
        Row("density: CPU per start, sandboxd (ms)", f"{cpu['total']:.1f} ms", note=note),
        Row("density: host mounts added per start", mounts,
            note="each copied by every later launch's mount namespace"),
    ]  # fmt: skip


CRUN_CONFIG = "pid, net, ipc, uts, mount, cgroup ns; read-only busybox root; memory+pids limits"


KERNEL_PARTS = ("Slab", "KernelStack", "PageTables", "Percpu", "Shmem")


def kernel_kib(side: dict[str, Any]) -> float:
    return sum(side["meminfo_kib_per_sandbox"][part] for part in KERNEL_PARTS)


def taken_view(why: dict[str, float]) -> str:
    """One side's bench_density.available_explained, in a few words."""
    return (f"{why['taken']:.0f} KiB = anon {why['anon']:.0f} + tmpfs {why['tmpfs']:.0f} + "
            f"kernel {why['kernel']:.0f} + unnamed {why['rest']:.0f} (own anon "
            f"{why.get('own_anon', 0):.0f}; not in it: reclaimable slab "
            f"{why['not_counted_slab']:.0f}, cache {why['not_counted_cache']:.0f})")  # fmt: skip


def charged_view(who: str, kib: dict[str, float]) -> str:
    return f"{who} {kib['usage']:.0f} KiB (kernel {kib['kernel']:.0f}, tmpfs {kib['shmem']:.0f})"


# Other processes' anonymous memory that may move between a side's snapshots before its
# verdict is withheld, KiB per sandbox: about 2 % of a figure (bench_density.side_anon).
OTHERS_ANON_KIB = 20


def memcgs_blurred(*sides: dict[str, Any]) -> str:
    """Why a memory verdict is withheld: other processes made or freed memory cgroups while a
    side was measured (more than 1 % of its N, at least 2), each moving the MemAvailable delta
    by about a sandbox's own cgroup (bench_density.memory_cgroups), or their anonymous memory
    moved by more than OTHERS_ANON_KIB per sandbox; "" if neither."""
    for side in sides:
        others = side.get("others_memcgs")
        if others is not None and abs(others) > max(2, side["n"] // 100):
            return f"other processes made {others:+d} memory cgroups meanwhile: not comparable"
        anon = side.get("others_anon_kib_per_sandbox")
        if anon is not None and abs(anon) > OTHERS_ANON_KIB:
            return f"others' anon moved {anon:+.0f} KiB per sandbox meanwhile: not comparable"
    return ""


def memory_rows(n: int, d: dict[str, Any], sides: dict[str, dict[str, Any]]) -> list[Row]:
    """Host memory per idle sandbox against crun's, each side measured in this run: crun as
    configured in bench_density.bundle (no user namespace), and crun with one (sandboxd's
    default units have one each); then the daemon's part of the figure and the mounts each
    sandbox holds (see bench_density.mount_view)."""
    ours = d["host_kib_per_sandbox"]
    rows = []
    notes = {"crun": f"crun: {CRUN_CONFIG}", "crun (userns)": "crun as above, in a user namespace"}
    for who, note in notes.items():
        c = sides.get(who, {"error": "not run"})
        theirs = c["host_kib_per_sandbox"] if "error" not in c and c["n"] == n else None
        # A delta at or below zero is other processes freeing memory meanwhile: no verdict.
        row = at_most_times(f"density: host memory per sandbox <= {who}", f"{ours:.0f} KiB",
                            ours if ours > 0 else None, (who, theirs), 1)  # fmt: skip
        figure = f"{row.figure} vs {theirs:.0f} KiB" if theirs is not None else row.figure
        if ours <= 0:
            row = Row(row.what, row.figure, row.goal, None, "MemAvailable rose meanwhile")
        elif blurred := memcgs_blurred(d, c):
            row = Row(row.what, row.figure, row.goal, None, blurred)
        rows.append(Row(row.what, figure, row.goal, row.met, f"{row.note}; {note}"))
    daemon = d["daemon_anon_kib"] / n
    rows.append(Row("density: daemon + fork server heap per sandbox", f"{daemon:.0f} KiB",
                    note=f"RssAnon / {n}, inside the figure above; without it "
                    f"{ours - daemon:.0f} KiB per sandbox"))  # fmt: skip
    everyone = {"sandboxd": d, **sides}
    taken = [f"{who} {taken_view(c['available_explained'])}"
             for who, c in everyone.items() if "available_explained" in c]  # fmt: skip
    if taken:
        why = "reclaimable slab and page cache grown: not in the delta (MemAvailable counts them)"
        rows.append(Row("density: MemAvailable delta per sandbox, taken apart", taken[0],
                        note=", ".join([*taken[1:], why])))  # fmt: skip
    kernel = [f"{who} {kernel_kib(c):.0f} KiB" for who, c in {"sandboxd": d, **sides}.items()
              if "meminfo_kib_per_sandbox" in c]  # fmt: skip
    rows.append(Row("density: kernel memory + tmpfs per sandbox", kernel[0],
                    note=", ".join([*kernel[1:], f"{' + '.join(KERNEL_PARTS)} from /proc/meminfo: "
                                    "what other processes' memory does not blur"])))  # fmt: skip
    views = [f"sandboxd {d['mounts']} / {d['own_superblocks']}"]
    views += [f"{who} {c['mounts']} / {c['own_superblocks']}" for who, c in sides.items()
              if "mounts" in c]  # fmt: skip
    rows.append(Row("density: mounts / own superblocks per sandbox", views[0],
                    note=", ".join(views[1:]) or "crun not measured"))  # fmt: skip
    charged = [charged_view(who, c["own_cgroup_kib"])
               for who, c in everyone.items() if c.get("own_cgroup_kib")]  # fmt: skip
    if charged:
        note = "not blurred by other processes; crun makes namespaces before joining its cgroup"
        rows.append(Row("density: charged to a sandbox's own memory cgroup, median", charged[0],
                        note=", ".join([*charged[1:], note])))  # fmt: skip
    return rows


def density_rows(n: int, crun_n: int, idle: float, runs: int) -> list[Row]:
    d: dict[str, Any] = bench_density.sandboxd_density(n, idle, runs)
    # Each crun side idles as long as the daemon did before its snapshot: the same point.
    c: dict[str, Any] = (
        bench_density.crun_density(crun_n, idle=idle) if crun_n else {"error": "--crun-n 0"}
    )
    cu: dict[str, Any] = (
        bench_density.crun_density(crun_n, userns=True, idle=idle)
        if crun_n
        else {"error": "--crun-n 0"}
    )
    sides = {"sandboxd": d, "crun": c, "crun (userns)": cu}
    print(
        "\nslab caches that grew most, and meminfo parts, KiB per sandbox (MemAvailable delta / N)"
    )
    print("\n".join(bench_density.slab_table(sides)), flush=True)
    crun_ok = "error" not in c and crun_n == n
    start = f"{d['start_all_s']:.1f} s"
    rows = [
        at_most_times(f"density: start {n} sandboxes, sandboxd", start, d["start_all_s"],
                      (f"crun run -d x{n}", c["start_all_s"] if crun_ok else None), 0.5),
        storm_row(n, d),
        *storm_cpu_rows(d, c if crun_ok else {}),
        under(f"density: daemon RSS with {n}", d["rss_mb"], 150, "MB",
              f"fork server {d['forkserver_rss_mb']:.1f} MB"),
        under(f"density: daemon idle CPU ({d['idle_window_s']:.0f} s)", d["idle_cpu_pct"], 2,
              "% of a core"),
        *memory_rows(n, d, {"crun": c, "crun (userns)": cu}),
        Row("density: processes per sandbox, sandboxd", f"{d['processes_per_sandbox']:.2f}",
            "no per-sandbox helper", helpers_ok(d),
            f"{d['non_sandbox_children']} other child of the daemon (the fork server)"),
        Row(f"reload, {n} units, one changed: API answer", f"{d['reload_api_ms']:.0f} ms",
            note=f"engine {d['reload_engine_ms']:.0f} ms; changed unit restarted after "
            f"{d['reload_to_restarted_ms']:.0f} ms"),
        under(f"sandboxctl status on {n} units, end to end (median of {runs})", d["status_ms"],
              bench_status.STATUS_GOAL_MS, "ms", f"--json {d['status_json_ms']:.0f} ms"),
        under(f"sandboxctl status UNIT with {n} units, end to end (median of {runs})",
              d["status_unit_ms"], bench_status.VERB_GOAL_MS, "ms",
              "a verb that only asks the daemon"),
        under(f"daemon list view, {n} units (GET /v1/units, kept-alive)", d["status_api_ms"],
              bench_status.LIST_GOAL_MS, "ms", f"p95 {d['status_api_p95_ms']:.1f} ms; daemon "
              f"CPU {d['status_api_cpu_ms']:.1f} ms a request"),
        under(f"daemon top frame, {n} units (GET /v1/top, kept-alive)", d["top_api_ms"],
              bench_status.TOP_GOAL_MS, "ms"),
        Row(f"density: stop {n} sandboxes", f"{d['stop_all_s']:.1f} s", note="daemon SIGTERM"),
    ]  # fmt: skip
    if "error" in c:
        return [*rows, Row("density: crun", "not measured", note=c["error"])]
    return [
        *rows,
        Row(f"density: start {crun_n} containers, crun run -d", f"{c['start_all_s']:.1f} s",
            note=f"{crun_n / c['start_all_s']:.0f} starts/s (sequential CLI calls)"),
        Row("density: processes per container, crun", f"{c['processes_per_sandbox']:.2f}",
            note="no monitor (conmon would add 1)"),
        Row(f"density: delete {crun_n} containers, crun", f"{c['stop_all_s']:.1f} s",
            note="crun delete -f, sequential"),
    ]  # fmt: skip


# Issue 23's scale goals, at --scale units (5000).
SCALE_RSS_GOAL_MB = 250.0
SCALE_IDLE_CPU_GOAL_PCT = 2.0
SCALE_IDLE_S = 30.0
SCALE_STATUS_GOAL_MS = 150.0
SCALE_RELOAD_GOAL_MS = 100.0


# What packaging/sandboxd.service gives the daemon (LimitNOFILE=): a shell's hard limit (often
# 20000) would stop a 5000-unit daemon at ~4900 units (about four fds a unit).
SERVICE_NOFILE = 524288


def scale_rows(n: int, runs: int) -> list[Row]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < SERVICE_NOFILE:  # inherited by the daemon
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (SERVICE_NOFILE, SERVICE_NOFILE))
        except (ValueError, OSError):  # no CAP_SYS_RESOURCE (a container): run under `hard`
            print(f"scale: cannot raise the fd limit to {SERVICE_NOFILE}, the daemon gets "
                  f"{hard} (about {hard // 4} units at ~4 fds a unit)", flush=True)  # fmt: skip
    d: dict[str, Any] = bench_density.sandboxd_density(n, SCALE_IDLE_S, runs)
    return [
        Row(f"scale: start {n} sandboxes", f"{d['start_all_s']:.1f} s",
            note=f"daemon.ready after {d['ready_s']:.1f} s"),
        under(f"scale: daemon RSS with {n}", d["rss_mb"], SCALE_RSS_GOAL_MB, "MB",
              f"{d['rss_after_idle_mb']:.1f} MB after the idle window; fork server "
              f"{d['forkserver_rss_mb']:.1f} MB"),
        under(f"scale: daemon idle CPU with {n} ({d['idle_window_s']:.0f} s)",
              d["idle_cpu_pct"], SCALE_IDLE_CPU_GOAL_PCT, "% of a core", "schedstat"),
        under(f"scale: sandboxctl status on {n} units, end to end (median of {runs})",
              d["status_ms"], SCALE_STATUS_GOAL_MS, "ms", f"--json {d['status_json_ms']:.0f} ms"),
        under(f"scale: reload, {n} units, one changed (API answer)", d["reload_api_ms"],
              SCALE_RELOAD_GOAL_MS, "ms", f"engine {d['reload_engine_ms']:.0f} ms; changed unit "
              f"restarted after {d['reload_to_restarted_ms']:.0f} ms"),
        Row(f"scale: sandboxctl status UNIT with {n} units (median of {runs})",
            f"{d['status_unit_ms']:.1f} ms"),
        Row(f"scale: daemon list view, {n} units (GET /v1/units, kept-alive)",
            f"{d['status_api_ms']:.1f} ms"),
        Row(f"scale: stop {n} sandboxes", f"{d['stop_all_s']:.1f} s", note="daemon SIGTERM"),
    ]  # fmt: skip


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-n", type=int, default=50)
    parser.add_argument("--density", type=int, default=1000)
    parser.add_argument("--crun-n", type=int, default=None)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--scale", type=int, default=5000)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--stall", type=float, default=10.0)
    parser.add_argument("--skip-install", action="store_true")
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--only", default=",".join(s for s in SECTIONS if s != "scale"))
    parser.add_argument(
        "--markdown", type=Path, metavar="FILE", help="also write the table into FILE's block"
    )
    args = parser.parse_args()
    args.sections = set(args.only.split(","))
    if unknown := args.sections - set(SECTIONS):
        parser.error(f"--only: unknown {', '.join(sorted(unknown))} (from {', '.join(SECTIONS)})")
    return args


def measure(args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    """The rows of every section asked for, and with --trace the stages as printed."""
    only = args.sections
    rows: list[Row] = []
    stages: list[str] = []
    if "peers" in only:
        rows += peer_rows(args.n)
        if args.trace:
            stages = bench_peers.trace_report(*bench_peers.trace(args.n))
            print("\n".join(stages), flush=True)
    if "oom" in only:
        rows += oom_rows(args.cycles)
        if args.trace:
            restarts = bench_oom_restart.trace(args.cycles)
            print("\n".join(restarts), flush=True)
            stages += ["", *restarts] if stages else restarts
    if "control" in only:
        rows += bench_status.rows(args.density, args.n)
    if "density" in only:
        crun_n = args.crun_n if args.crun_n is not None else args.density
        rows += density_rows(args.density, crun_n, args.idle, min(args.n, 20))
    if "scale" in only:
        rows += scale_rows(args.scale, min(args.n, 20))
    if "faults" in only:
        rows += [Row(w, f, note=n) for w, f, n in bench_faults.rows(args.stall, args.density)]
    return rows, stages


def main() -> None:
    args = arguments()
    if os.geteuid() != 0:
        sys.exit("python -m tests.bench: needs root (namespaces, cgroups, peers)")
    if not args.skip_install and "peers" in args.sections:
        install_peers()
    # Every process the bench starts (the daemon, sandboxctl) reads the checkout's bytecode,
    # as an installed sandboxd would, instead of compiling its modules where
    # PYTHONDONTWRITEBYTECODE is set.
    bench_status.write_bytecode()
    header = machine()
    rows, stages = measure(args)
    header += f", load {os.getloadavg()[0]:.1f} at the end"
    print(f"\nsandboxd vs peers — {header}")
    print("\n".join(goals.table(rows)))
    if args.markdown is not None:
        block = goals.markdown(rows, header)
        if stages:  # --trace: where one launch's time goes, as printed
            block += "\n\n```\n" + "\n".join(stages) + "\n```"
        goals.write_block(args.markdown, block)
        print(f"table written to {args.markdown}")


if __name__ == "__main__":
    main()
