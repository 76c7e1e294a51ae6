"""Launch-to-exit latency of /bin/true with full isolation: sandboxd vs crun, runc, bwrap and
systemd-nspawn, interleaved run by run on the same busybox rootfs.

    sudo .venv/bin/python -m tests.bench.bench_peers [-n 50]

sandboxd launches through its fork server from a process carrying the daemon's imports
(tests/bench/bench_launch.py's `sandboxd_run`, reused as is), with a fresh memory+pids cgroup
per run, once as a default unit (its own user namespace, seven namespaces) and once with
`user_namespace = "host"` (sandboxd-hostids, the six the peers get): the difference is the user
namespace's cost. crun and runc get an OCI bundle with the same six namespaces, a read-only root
and the same memory+pids limits (their own cgroup per run); crun runs inside `unshare -m` with
the unified hierarchy unmounted there (it refuses hybrid hosts; bench_launch.py's runner), runc
runs as is. bwrap: --unshare-all (user, pid, net, ipc, uts, cgroup) with the rootfs read-only;
it creates no cgroup, so it does less. systemd-nspawn: --register=no --keep-unit (no machined,
no scope: the only way without systemd as PID 1) with --private-network and --read-only; it
makes no cgroup of its own either. A peer that is missing or fails is reported with the reason.

`--trace` times each stage of n more sandboxd launches (LaunchRequest.trace: CLOCK_MONOTONIC
stamps taken by the daemon side, the fork server's launcher and PID 1, sent back on the sync
pipe) and prints each stage's median and p95: where a launch's time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from supervisor.linux import helduserns
from supervisor.sandbox.host import forkserver
from supervisor.sandbox.host.launch import LaunchRequest, build_plan, launch
from supervisor.sandbox.wire.plancodec import encode_for_server
from tests.bench import bench_launch as bl
from tests.bench.proc_cpu import (
    anon_kib,
    children_of,
    cpu_seconds,
    fault_counts,
    reaped_cpu_seconds,
)

Runner = Callable[[], float]
HOST_IDS = "sandboxd-hostids"  # user_namespace = "host": no user namespace


def timed(argv: list[str]) -> Runner:
    def run() -> float:
        t = time.perf_counter()
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        ms = (time.perf_counter() - t) * 1000
        if proc.returncode != 0:
            raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.decode()[-300:].strip()}")
        return ms

    return run


def held_userns(work: Path) -> tuple[str, helduserns.Holder]:
    """Where the bench's unit holds its user namespace, in a holder of its own, as the daemon
    holds one per range; the caller destroys the holder."""
    _, base, size = bl.harness.ID_MAP
    directory = str(work / "userns")
    return helduserns.path_for(directory, base, size), helduserns.Holder.open(directory)


def runc_runner(rootfs: Path, work: Path) -> Runner:
    bundle = work / "runc"
    bundle.mkdir()
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"].update(args=["/bin/true"], terminal=False)
    config["root"] = {"path": str(rootfs), "readonly": True}  # runc refuses a symlinked root
    config["hostname"] = "bench"
    linux = config["linux"]
    linux["namespaces"] = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")]
    linux["resources"] = {"memory": {"limit": bl.MEMORY}, "pids": {"limit": bl.PIDS}}
    (bundle / "config.json").write_text(json.dumps(config))
    serial = iter(range(1 << 30))
    prefix = f"sandboxd-bench-runc-{os.getpid()}"

    def run() -> float:
        return timed(["runc", "--root", str(work / "runc-state"), "run", "-b", str(bundle),
                      f"{prefix}-{next(serial)}"])()  # fmt: skip

    return run


def bwrap_runner(rootfs: Path) -> Runner:
    return timed(
        ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", str(rootfs), "/",
         "--proc", "/proc", "--dev", "/dev", "--hostname", "bench", "/bin/true"]
    )  # fmt: skip


def nspawn_runner(rootfs: Path) -> Runner:
    serial = iter(range(1 << 30))

    def run() -> float:
        return timed(["systemd-nspawn", "--register=no", "--keep-unit", "-q", "--read-only",
                      "--private-network", f"--machine=sbxbench{os.getpid()}x{next(serial)}",
                      "-D", str(rootfs), "/bin/true"])()  # fmt: skip

    return run


@contextlib.contextmanager
def sides(rootfs: Path, work: Path) -> Iterator[tuple[dict[str, Runner], dict[str, str]]]:
    """Every runnable side, and why the others are missing."""
    harness = bl.harness
    harness.set_subreaper()
    held, holder = held_userns(work)
    # As the daemon does: its launchers look the held namespace up through the holder's root.
    server = bl.ForkServer.start(holder=holder.shared())
    null = os.open("/dev/null", os.O_WRONLY)
    skipped: dict[str, str] = {}
    try:
        spec = harness.unit(["/bin/true"], name="bench", sandbox={"root": str(rootfs)})
        host_ids = harness.unit(
            ["/bin/true"], name="bench", sandbox={"root": str(rootfs), "user_namespace": "host"}
        )
        # The default (a user namespace of its own) and the opt-out, interleaved like the
        # peers: their difference is what the user namespace costs a launch.
        runners: dict[str, Runner] = {
            "sandboxd": bl.sandboxd_run(spec, null, server, held),
            HOST_IDS: bl.sandboxd_run(host_ids, null, server),
        }
        with contextlib.ExitStack() as stack:
            candidates: dict[str, Callable[[], Runner]] = {
                "crun": lambda: stack.enter_context(bl.crun_runner(bl.crun_bundle(rootfs, work))),
                "runc": lambda: runc_runner(rootfs, work),
                "bwrap": lambda: bwrap_runner(rootfs),
                "systemd-nspawn": lambda: nspawn_runner(rootfs),
            }
            tools = {"crun": "crun", "runc": "runc", "bwrap": "bwrap",
                     "systemd-nspawn": "systemd-nspawn"}  # fmt: skip
            for name, make in candidates.items():
                if not shutil.which(tools[name]):
                    skipped[name] = f"{tools[name]} not installed"
                    continue
                try:
                    runner = make()
                    runner()  # one trial run: does it work on this host at all?
                    runners[name] = runner
                except (RuntimeError, OSError, subprocess.CalledProcessError, ValueError) as exc:
                    skipped[name] = f"does not run here: {exc}"
            yield runners, skipped
    finally:
        os.close(null)
        server.close()
        holder.destroy()
        # nspawn --keep-unit leaves an empty propagation dir per machine name.
        for d in Path("/run/systemd/nspawn/propagate").glob(f"sbxbench{os.getpid()}x*"):
            shutil.rmtree(d, ignore_errors=True)


def interleave(
    runners: dict[str, Runner], skipped: dict[str, str], n: int
) -> dict[str, list[float]]:
    """`n` timed runs of each side, one side after the other, after 3 warm-up rounds; a side
    that fails leaves, with the reason in `skipped`."""
    results: dict[str, list[float]] = {}
    for i in range(n + 3):
        for name, run in list(runners.items()):
            try:
                ms = run()
            except RuntimeError as exc:
                skipped[name] = f"failed on run {i}: {exc}"
                del runners[name]
                continue
            if i >= 3:  # warm-up
                results.setdefault(name, []).append(ms)
    return results


def measure(n: int) -> tuple[dict[str, list[float]], dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="sandboxd-bench-peers-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # the rootfs is reached as the sandbox's mapped ids, not as root
        rootfs = work / "rootfs"
        bl.busybox_rootfs(rootfs)
        (rootfs / "usr/lib").mkdir(parents=True)
        (rootfs / "usr/lib/os-release").write_text("ID=busybox\n")  # nspawn wants an OS tree
        with sides(rootfs, work) as (runners, skipped):
            results = interleave(runners, skipped, n)
    return results, skipped


def report(results: dict[str, list[float]], skipped: dict[str, str], n: int) -> list[str]:
    lines = [f"launch-to-exit of /bin/true, full isolation, {n} interleaved runs each (ms)",
             f"{'':16}{'median':>8}{'p95':>8}{'sandboxd/peer':>15}"]  # fmt: skip
    ours = results.get("sandboxd", [])
    for name, xs in results.items():
        med, p = statistics.median(xs), bl.p95(xs)
        ours_too = name in ("sandboxd", HOST_IDS)
        ratio = f"{statistics.median(ours) / med:.2f}x" if ours and not ours_too else ""
        lines.append(f"{name:16}{med:8.1f}{p:8.1f}{ratio:>15}")
    lines += [f"{name:16}not measured: {why}" for name, why in skipped.items()]
    return lines


Stamps = list[tuple[str, int]]


def traced_launch(
    request: LaunchRequest, server: bl.ForkServer, pid1s: list[resource.struct_rusage] | None = None
) -> Stamps:
    """One launch of `request` as bench_launch.sandboxd_run times it (cgroup made and removed
    around it), traced: the bench's own stamps around the launch's. PID 1's rusage (its CPU
    and faults, /bin/true's after its exec included) is appended to `pid1s`."""
    start = time.monotonic_ns()
    with bl.harness.v1_cgroup(memory_max=bl.MEMORY, pids_max=bl.PIDS) as procs:
        made = time.monotonic_ns()
        launched = launch(dataclasses.replace(request, cgroup_procs=procs), server=server)
        launched.go()
        _, status, usage = os.wait4(launched.pid, 0)
        reaped = time.monotonic_ns()
    assert status == 0, status
    if pid1s is not None:
        pid1s.append(usage)
    return [("bench: start", start), ("bench: cgroup made", made), *launched.trace,
            ("bench: PID 1 exited and reaped", reaped),
            ("bench: cgroup removed", time.monotonic_ns())]  # fmt: skip


def _launchers_reaped(server: int) -> None:
    """Wait until the fork server holds only its idle spare: every launcher before it reaped
    (it reaps them as their pidfds turn readable), so its reaped counts hold theirs."""
    for _ in range(10_000):
        if len(children_of(server)) <= 1:
            return
        time.sleep(0.001)
    raise RuntimeError(f"the fork server still has children: {children_of(server)}")


class Costs(NamedTuple):
    """Per launch, over the traced runs: the launcher's (the spare, from its fork by the
    server to its exit) and PID 1's (to its exit; /bin/true's exec and run included) CPU in
    ms and minor faults, the fork server's own CPU, and its RSS and anonymous memory (KiB)."""

    launcher_ms: float
    launcher_faults: float
    pid1_ms: float
    pid1_faults: float
    server_ms: float
    server_rss: int
    server_anon: int


def _server_counts(server: int) -> tuple[float, float, int]:
    """The server's own CPU (s), its reaped children's CPU (s) and minor faults."""
    _launchers_reaped(server)
    return cpu_seconds(server), reaped_cpu_seconds(server), fault_counts(server)[1]


def trace(n: int) -> tuple[list[Stamps], int, Costs]:
    """`n` traced launches of /bin/true (after 3 warm-up runs), the plan's size on the wire and
    what each launch cost its processes."""
    with tempfile.TemporaryDirectory(prefix="sandboxd-bench-trace-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        bl.busybox_rootfs(rootfs)
        harness = bl.harness
        harness.set_subreaper()
        held, holder = held_userns(Path(tmp))
        server = bl.ForkServer.start(holder=holder.shared())
        null = os.open("/dev/null", os.O_WRONLY)
        try:
            spec = harness.unit(["/bin/true"], name="bench", sandbox={"root": str(rootfs)})
            # A default unit: its own user namespace, as the daemon would launch it.
            ids = harness.id_map_for(spec)
            request = LaunchRequest(spec, [], null, null, id_map=ids, userns_file=held, trace=True)
            plan = build_plan(request)
            # On the wire once the server keeps the recurring blobs and the unit's mount ops
            # (after the first launch).
            first = encode_for_server(
                plan, frozenset(), forkserver.CACHE_BUDGET, token=lambda: "p0",
                part_budget=forkserver.PARTS_BUDGET,
            )  # fmt: skip
            blobs = {d for d, _, _ in first.offers}
            parts = {id(ops): (token, ops) for token, _, ops in first.parts}
            size = len(encode_for_server(plan, blobs, 0, parts=parts).body)
            for _ in range(3):
                traced_launch(request, server)
            before = _server_counts(server.pid)
            pid1s: list[resource.struct_rusage] = []
            runs = [traced_launch(request, server, pid1s) for _ in range(n)]
            after = _server_counts(server.pid)
            costs = Costs(
                (after[1] - before[1]) * 1e3 / n,
                (after[2] - before[2]) / n,
                sum(u.ru_utime + u.ru_stime for u in pid1s) * 1e3 / n,
                sum(u.ru_minflt for u in pid1s) / n,
                (after[0] - before[0]) * 1e3 / n,
                *anon_kib(server.pid),
            )
        finally:
            os.close(null)
            server.close()
            holder.destroy()
    return runs, size, costs


GO_SENT = "daemon: Go sent"


def _durations(run: Stamps) -> dict[str, tuple[float, float]]:
    """Each stamp's (ms since the first stamp, ms its stage took). A stage starts at the latest
    stamp before it on the timeline, but for PID 1's: PID 1 builds while the daemon reads its
    PID and sends Go, so its stages start at its own stamp before, or the launcher's fork, or
    (waiting for Go) the daemon's Go."""
    out: dict[str, tuple[float, float]] = {}
    for stage, ns in run:
        pid1 = stage.startswith("PID 1:")
        waited = [t for other, t in run if t <= ns and other != stage and (
            not pid1 or other.startswith(("PID 1:", "launcher:")) or other == GO_SENT)]  # fmt: skip
        out[stage] = ((ns - run[0][1]) / 1e6, (ns - max(waited, default=ns)) / 1e6)
    return out


def trace_report(runs: list[Stamps], plan_bytes: int, costs: Costs | None = None) -> list[str]:
    """Each stage's time, median and p95, in the order of their median end."""
    stages = [stage for stage, _ in runs[0]]
    if any(sorted(stage for stage, _ in run) != sorted(stages) for run in runs):
        raise RuntimeError("traced launches took different stages: cannot line them up")
    table = [_durations(run) for run in runs]
    ends = {stage: statistics.median(t[stage][0] for t in table) for stage in stages}
    lines = [f"one sandboxd launch of /bin/true by stage, {len(runs)} traced runs (ms; "
             f"plan {plan_bytes} bytes on the wire); each stage ends at its stamp",
             f"{'stage':56}{'ends at':>8}{'median':>8}{'p95':>8}"]  # fmt: skip
    for stage in sorted(stages[1:], key=ends.__getitem__):
        xs = [t[stage][1] for t in table]
        lines.append(f"{stage:56}{ends[stage]:8.2f}{statistics.median(xs):8.2f}{bl.p95(xs):8.2f}")
    for what, first, last in (
        ("total (bench: start -> cgroup removed)", "bench: start", "bench: cgroup removed"),
        ("launch called -> exec observed", "daemon: launch called",
         "daemon: exec observed (EOF on the sync pipe)"),
    ):  # fmt: skip
        xs = [(dict(run)[last] - dict(run)[first]) / 1e6 for run in runs]
        lines.append(f"{what:64}{statistics.median(xs):8.2f}{bl.p95(xs):8.2f}")
    if costs is not None:
        lines += [
            f"per launch: launcher {costs.launcher_ms:.2f} ms CPU, "
            f"{costs.launcher_faults:.0f} minor faults; PID 1 (with /bin/true) "
            f"{costs.pid1_ms:.2f} ms CPU, {costs.pid1_faults:.0f} minor faults; fork server "
            f"{costs.server_ms:.2f} ms CPU; fork server RSS {costs.server_rss} KiB, "
            f"anonymous {costs.server_anon} KiB"
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="runs per side (default 50)")
    parser.add_argument("--trace", action="store_true", help="also time each launch stage")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_peers: needs root")
    results, skipped = measure(args.n)
    print("\n".join(report(results, skipped, args.n)))
    if args.trace:
        print("\n".join(trace_report(*trace(args.n))))


if __name__ == "__main__":
    main()
