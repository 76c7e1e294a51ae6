"""Launch-to-exit latency of /bin/true in a full sandbox: sandboxd (fork server and direct fork)
vs `crun run`.

    sudo .venv/bin/python -m tests.bench.bench_launch [-n 100]

Every side gets the same sandbox: pid, mount, uts, ipc, net and cgroup namespaces, a busybox
rootfs (read-only), a fresh cgroup with memory and pids limits created and removed per run.
sandboxd launches from this already-running Python process, which first imports what the daemon
imports (aiohttp, pyroute2, pydantic, structlog, the engine and API; its RSS is printed) so the
fork cost is the real daemon's: once through the fork server (what the daemon does) and once
forking itself (the fallback). crun is spawned per run, as any caller of crun must. crun refuses
hybrid cgroup hosts, so it runs from a helper inside `unshare -m` with /sys/fs/cgroup/unified
unmounted there (the host is untouched). The three are interleaved run by run, so load from
other processes on the machine hits them alike. Prints median and p95, and the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# What the daemon carries: the fork cost depends on the forking process's address space.
import aiohttp.web  # noqa: F401
import prometheus_client  # noqa: F401
import pydantic  # noqa: F401
import pyroute2  # noqa: F401
import structlog  # noqa: F401

from supervisor.sandbox.host.forkserver import ForkServer
from supervisor.sandbox.host.launch import LaunchRequest, launch
from supervisor.unit.spec import UnitSpec
from tests.support import harness

# The daemon's own modules, best effort: the work tree is shared with engineers mid-change.
missing = []
for module in ("supervisor.daemon", "supervisor.api.server", "supervisor.sandbox.host.network"):
    try:
        importlib.import_module(module)
    except ImportError as err:
        missing.append(f"{module} ({err})")

MEMORY = 256 << 20
PIDS = 256

# One `crun run` per line read on stdin; prints its wall time in ms.
CRUN_RUNNER = r"""
import subprocess, sys, time
bundle = sys.argv[1]
subprocess.run(["umount", "/sys/fs/cgroup/unified"], check=True)
for i, _ in enumerate(sys.stdin):
    t = time.perf_counter()
    subprocess.run(["crun", "run", "-b", bundle, f"sandboxd-bench-{os.getpid()}-{i}"], check=True)
    print((time.perf_counter() - t) * 1000, flush=True)
""".replace("import subprocess", "import os, subprocess")


def busybox_rootfs(root: Path) -> None:
    for d in ("bin", "etc", "proc", "dev", "sys", "tmp", "run"):
        (root / d).mkdir(parents=True)
    shutil.copy("/usr/bin/busybox", root / "bin/busybox")
    for applet in ("sh", "true"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")


def sandboxd_run(
    spec: UnitSpec, null: int, server: ForkServer | None, userns_file: str | None = None
) -> Callable[[], float]:
    """`userns_file`: where the unit's user namespace is held across launches, as the
    daemon holds one per range (linux/helduserns.py); the caller drops it."""

    def run() -> float:
        t0 = time.perf_counter()
        with harness.v1_cgroup(memory_max=MEMORY, pids_max=PIDS) as procs:
            ids = harness.id_map_for(spec)
            request = LaunchRequest(spec, procs, null, null, id_map=ids, userns_file=userns_file)
            launched = launch(request, server=server)
            launched.go()
            _, status = os.waitpid(launched.pid, 0)
        assert status == 0, status
        return (time.perf_counter() - t0) * 1000

    return run


def crun_bundle(rootfs: Path, workdir: Path) -> Path:
    bundle = workdir / "bundle"
    bundle.mkdir()
    os.symlink(rootfs, bundle / "rootfs")
    subprocess.run(["crun", "spec"], cwd=bundle, check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"].update(args=["/bin/true"], terminal=False)
    config["root"] = {"path": "rootfs", "readonly": True}
    config["hostname"] = "bench"
    linux = config["linux"]
    linux["namespaces"] = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")]
    linux["resources"] = {"memory": {"limit": MEMORY}, "pids": {"limit": PIDS}}
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


@contextmanager
def crun_runner(bundle: Path) -> Iterator[Callable[[], float]]:
    proc = subprocess.Popen(
        ["unshare", "-m", sys.executable, "-c", CRUN_RUNNER, str(bundle)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def run() -> float:
        stdin.write("run\n")
        stdin.flush()
        return float(stdout.readline())

    try:
        yield run
    finally:
        stdin.close()
        proc.wait()


def rss_mb(pid: int | str = "self") -> float:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(len(xs) * 0.95) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100, help="runs per side (default 100)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_launch: needs root")
    harness.set_subreaper()
    server = ForkServer.start()
    null = os.open("/dev/null", os.O_WRONLY)
    results: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="sandboxd-bench-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            busybox_rootfs(rootfs)
            spec = harness.unit(["/bin/true"], name="bench", sandbox={"root": str(rootfs)})
            sides = {
                "sandboxd via fork server": sandboxd_run(spec, null, server),
                "sandboxd direct fork": sandboxd_run(spec, null, None),
            }
            with contextlib.ExitStack() as stack:
                if shutil.which("crun"):
                    sides["crun run"] = stack.enter_context(
                        crun_runner(crun_bundle(rootfs, Path(tmp)))
                    )
                for i in range(args.n + 3):
                    for name, run in sides.items():
                        t = run()
                        if i >= 3:  # warm-up: seccomp compile, page cache, crun's first run
                            results.setdefault(name, []).append(t)
        server_rss = rss_mb(server.pid)
    finally:
        os.close(null)
        server.close()
    print(f"launch-to-exit of /bin/true incl. cgroup create/remove, {args.n} runs each (ms)")
    print(f"this process (the daemon's imports): {rss_mb():.1f} MB RSS;"
          f" fork server: {server_rss:.1f} MB RSS")  # fmt: skip
    for what in missing:
        print(f"  (could not import {what})")
    print(f"{'':28}{'median':>8}{'p95':>8}")
    for name, xs in results.items():
        print(f"{name:28}{statistics.median(xs):8.2f}{p95(xs):8.2f}")
    crun = results.get("crun run")
    if crun:
        for name in ("sandboxd via fork server", "sandboxd direct fork"):
            ratio = statistics.median(results[name]) / statistics.median(crun)
            ratio95 = p95(results[name]) / p95(crun)
            print(f"ratio {name} / crun: median {ratio:.2f}x, p95 {ratio95:.2f}x")
    else:
        print("crun not installed: no comparison")


if __name__ == "__main__":
    main()
