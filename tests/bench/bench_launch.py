"""Launch-to-exit latency of /bin/true in a full sandbox: sandboxd's launcher vs `crun run`.

    sudo .venv/bin/python tests/bench/bench_launch.py [-n 100]

Both sides get the same sandbox: pid, mount, uts, ipc, net and cgroup namespaces, a busybox
rootfs (read-only), a fresh cgroup with memory and pids limits created and removed per run.
sandboxd launches from this already-running Python process (as the daemon does: no new
interpreter per launch); crun is spawned per run, as any caller of crun must. crun refuses
hybrid cgroup hosts, so its loop runs inside `unshare -m` with /sys/fs/cgroup/unified unmounted
there (the host is untouched). Prints median and p95 of each, side by side, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "probe"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import harness  # lives with the probe, in tests/probe

from supervisor.sandbox.launch import LaunchRequest, launch

MEMORY = 256 << 20
PIDS = 256

CRUN_LOOP = r"""
import subprocess, sys, time, json
bundle, n = sys.argv[1], int(sys.argv[2])
subprocess.run(["umount", "/sys/fs/cgroup/unified"], check=True)
out = []
for i in range(n + 3):
    t = time.perf_counter()
    subprocess.run(["crun", "run", "-b", bundle, f"sandboxd-bench-{i}"], check=True)
    out.append((time.perf_counter() - t) * 1000)
print(json.dumps(out[3:]))
"""


def busybox_rootfs(root: Path) -> None:
    for d in ("bin", "etc", "proc", "dev", "sys", "tmp", "run"):
        (root / d).mkdir(parents=True)
    shutil.copy("/usr/bin/busybox", root / "bin/busybox")
    for applet in ("sh", "true"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")


def bench_sandboxd(rootfs: Path, n: int) -> tuple[list[float], list[float]]:
    harness.set_subreaper()
    spec = harness.unit(["/bin/true"], name="bench", sandbox={"root": str(rootfs)})
    null = os.open("/dev/null", os.O_WRONLY)
    total, launch_only = [], []
    for i in range(n + 3):
        t0 = time.perf_counter()
        with harness.v1_cgroup(memory_max=MEMORY, pids_max=PIDS) as procs:
            t1 = time.perf_counter()
            launched = launch(LaunchRequest(spec, procs, null, null))
            launched.go()
            _, status = os.waitpid(launched.pid, 0)
            t2 = time.perf_counter()
        t3 = time.perf_counter()
        assert status == 0, status
        if i >= 3:  # warm-up: first compile of the seccomp profile, page cache
            total.append((t3 - t0) * 1000)
            launch_only.append((t2 - t1) * 1000)
    os.close(null)
    return total, launch_only


def bench_crun(rootfs: Path, workdir: Path, n: int) -> list[float]:
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
    proc = subprocess.run(
        ["unshare", "-m", sys.executable, "-c", CRUN_LOOP, str(bundle), str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: list[float] = json.loads(proc.stdout)
    return result


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(len(xs) * 0.95) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100, help="runs per side (default 100)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_launch: needs root")
    with tempfile.TemporaryDirectory(prefix="sandboxd-bench-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        busybox_rootfs(rootfs)
        ours, ours_launch = bench_sandboxd(rootfs, args.n)
        crun = bench_crun(rootfs, Path(tmp), args.n) if shutil.which("crun") else []
    print(f"launch-to-exit of /bin/true, {args.n} runs each (ms)")
    print(f"{'':34}{'median':>8}{'p95':>8}")
    print(f"{'sandboxd (incl. cgroup mk/rm)':34}{statistics.median(ours):8.2f}{p95(ours):8.2f}")
    print(
        f"{'sandboxd (launch+go+reap only)':34}"
        f"{statistics.median(ours_launch):8.2f}{p95(ours_launch):8.2f}"
    )
    if crun:
        print(f"{'crun run (incl. its cgroup)':34}{statistics.median(crun):8.2f}{p95(crun):8.2f}")
        ratio = statistics.median(ours) / statistics.median(crun)
        print(f"ratio sandboxd/crun (median, like for like): {ratio:.2f}x")
    else:
        print("crun not installed: no comparison")


if __name__ == "__main__":
    main()
