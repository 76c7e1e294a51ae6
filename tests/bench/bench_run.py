"""End to end, as a user types it: `sandboxctl run --wait --rm /bin/true` against a real daemon
vs the peers' one-shot commands, interleaved run by run on the same busybox rootfs.

    sudo .venv/bin/python -m tests.bench.bench_run [-n 50]

Each sample is a fresh `sandboxctl` process, from fork to its exit: interpreter start, the
transient unit's POST, the daemon's validation and launch, following the output and waiting for
the exit status, and the unit's removal (`--rm`). That is what `podman run --rm` and
`systemd-run --wait --pipe` are to their users; neither runs here (no podman package, systemd
is not PID 1), so the peers are `crun run` (OCI bundle, same namespaces, read-only root, memory
and pids limits; bench_launch.py's runner) and `bwrap --unshare-all`, which are exec'd per
container and have no daemon round trip. The launch alone (no client, no API) is bench_peers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.bench import bench_launch as bl
from tests.bench import bench_peers
from tests.support import kit

Runner = Callable[[], float]


def sandboxctl_runner(daemon: Any, rootfs: Path) -> Runner:
    env = {**os.environ, "SANDBOXD_SOCKET": str(daemon.socket)}
    env.pop("TERM", None)
    exe = shutil.which("sandboxctl", path=os.path.dirname(sys.executable))
    command = [exe] if exe else [sys.executable, "-m", "supervisor.cli.main"]
    argv = [*command, "run", "--wait", "--rm", "-p", f"sandbox.root={rootfs}",
            "-p", f"resources.memory_max={bl.MEMORY}", "-p", f"resources.pids_max={bl.PIDS}",
            "--", "/bin/true"]  # fmt: skip

    def run() -> float:
        t = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              check=False)  # fmt: skip
        ms = (time.perf_counter() - t) * 1000
        if proc.returncode != 0:
            raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.decode()[-300:].strip()}")
        return ms

    return run


@contextlib.contextmanager
def sides(rootfs: Path, work: Path) -> Iterator[tuple[dict[str, Runner], dict[str, str]]]:
    daemon = kit.new_daemon("bench-run")
    skipped: dict[str, str] = {}
    try:
        daemon.start()
        runners: dict[str, Runner] = {"sandboxctl run": sandboxctl_runner(daemon, rootfs)}
        with contextlib.ExitStack() as stack:
            candidates: dict[str, tuple[str, Callable[[], Runner]]] = {
                "crun run": (
                    "crun",
                    lambda: stack.enter_context(bl.crun_runner(bl.crun_bundle(rootfs, work))),
                ),
                "bwrap": ("bwrap", lambda: bench_peers.bwrap_runner(rootfs)),
            }
            for name, (tool, make) in candidates.items():
                if not shutil.which(tool):
                    skipped[name] = f"{tool} not installed"
                    continue
                try:
                    runner = make()
                    runner()  # does it run on this host at all?
                    runners[name] = runner
                except (RuntimeError, OSError, subprocess.CalledProcessError, ValueError) as exc:
                    skipped[name] = f"does not run here: {exc}"
            yield runners, skipped
        daemon.stop(120)
    finally:
        problems = kit._teardown(daemon)
        shutil.rmtree(daemon.base, ignore_errors=True)
        if problems:
            print(f"cleanup: {problems}", file=sys.stderr)


def measure(n: int) -> tuple[dict[str, list[float]], dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="sandboxd-bench-run-") as tmp:
        work = Path(tmp)
        rootfs = work / "rootfs"
        bl.busybox_rootfs(rootfs)
        with sides(rootfs, work) as (runners, skipped):
            results = bench_peers.interleave(runners, skipped, n)
    return results, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50)
    args = parser.parse_args()
    results, skipped = measure(args.n)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"one-shot /bin/true end to end, {args.n} interleaved runs (load {load})")
    for name, samples in results.items():
        ordered = sorted(samples)
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
        print(f"  {name:16} median {statistics.median(ordered):7.1f} ms  p95 {p95:7.1f} ms")
    for name, why in skipped.items():
        print(f"  {name:16} skipped: {why}")


if __name__ == "__main__":
    main()
