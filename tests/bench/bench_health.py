"""Health probes at scale: a real sandboxd with N units (default 100) each probed every second;
prints the daemon's CPU use (user+sys, % of one core) with and without probes, how fast it
answers a status request meanwhile (a loop held up by probes would show there), probe latency
as the daemon measured it, and its fd count. Figures, not a pass/fail test.

    .venv/bin/python -m tests.bench.bench_health [--units 100] [--seconds 20] \\
        [--kind tcp|http|exec|mix]

The services are tiny python3 TCP/HTTP servers (tcp/http probes connect from inside each
sandbox's network namespace) or a shell (exec probes are run by the daemon's fork server, which
enters the sandbox); `mix` is a third of each. CPU is measured from /proc (proc_cpu.py) over a
window after every unit is healthy, then again with the [health] sections removed (reload), as
the baseline: the daemon's own, and the fork server's with the probe runners it has reaped.
For exec probes, the peer: `crun exec` of the same command into a running crun container with
the same namespaces, CPU per exec (crun and everything it forks) and wall time, measured in the
same run (`--peer-execs N`, 0 to skip).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench import proc_cpu
from tests.support.daemon_kit import Daemon, teardown, wait_for

SERVER = """
import socket
s = socket.socket()
s.bind(("127.0.0.1", 7000))
s.listen(16)
while True:
    c, _ = s.accept()
    if c.recv(1024).startswith(b"GET"):
        c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
    c.close()
"""
SHELL = ["/bin/sh", "-c", "trap 'exit 0' INT; sleep 100000 & wait"]
PROBES = {
    "tcp": "tcp = 7000",
    "http": 'http = "http://127.0.0.1:7000/health"',
    "exec": 'exec = ["/bin/true"]',
}


def unit_text(kind: str, probe: bool) -> str:
    argv = SHELL if kind == "exec" else ["/usr/bin/python3", "-c", SERVER]
    text = f'[service]\nexec = {json.dumps(argv)}\nstop_signal = "SIGINT"\n'
    text += 'stop_timeout = "1s"\n[resources]\nmemory_max = "32M"\n'
    if probe:
        text += f'[health]\n{PROBES[kind]}\ninterval = "1s"\ntimeout = "500ms"\n'
    return text


def cpu_seconds(pid: int, children: bool = False) -> float:
    """`pid`'s CPU (+ its reaped children's), in seconds."""
    return proc_cpu.cpu_seconds(pid) + (proc_cpu.reaped_cpu_seconds(pid) if children else 0.0)


def fork_server_pid(daemon: int) -> int:
    """The daemon's fork server: its child running `python -m supervisor.sandbox.server`."""
    for task in os.listdir(f"/proc/{daemon}/task"):
        for child in Path(f"/proc/{daemon}/task/{task}/children").read_text().split():
            if b"supervisor.sandbox.server\x00" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
    raise RuntimeError("the daemon has no fork server")


@dataclass
class Window:
    daemon_cpu: float  # % of one core
    server_cpu: float  # the fork server with the probe runners it reaped
    api_ms: list[float]  # GET /v1/units/<unit> round trips: how long supervision waits


def measure(daemon: Daemon, server: int, unit: str, seconds: float) -> Window:
    """CPU over `seconds`, while asking the daemon for one unit's status every 100 ms: a loop
    held up by probes would show in those answers."""
    assert daemon.proc is not None
    pid = daemon.proc.pid
    before, server_before, t0 = cpu_seconds(pid), cpu_seconds(server, True), time.monotonic()
    latencies = []
    while time.monotonic() - t0 < seconds:
        asked = time.perf_counter()
        daemon.unit(unit)
        latencies.append((time.perf_counter() - asked) * 1000)
        time.sleep(0.1)
    elapsed = time.monotonic() - t0
    return Window(
        100.0 * (cpu_seconds(pid) - before) / elapsed,
        100.0 * (cpu_seconds(server, True) - server_before) / elapsed,
        latencies,
    )


# Runs inside `unshare -m` (crun refuses a hybrid cgroup host: /sys/fs/cgroup/unified is
# unmounted there only): starts a container, times N `crun exec CMD`, prints CPU and wall ms.
CRUN_EXEC = r"""
import os, resource, statistics, subprocess, sys, time
bundle, name, n, argv = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
subprocess.run(["umount", "/sys/fs/cgroup/unified"], check=True)
subprocess.run(["crun", "run", "-d", "-b", bundle, name], check=True)
try:
    walls = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(["crun", "exec", name, *argv], check=True)
        walls.append((time.perf_counter() - t) * 1000)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000 / n
    print(f"{cpu:.2f} {statistics.median(walls):.1f}")
finally:
    subprocess.run(["crun", "kill", name, "KILL"], check=False)
    for _ in range(50):
        if subprocess.run(["crun", "delete", name], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
"""


def crun_exec_cost(n: int, argv: list[str]) -> str:
    """`crun exec` into a running crun container (six namespaces, busybox root, limits)."""
    if shutil.which("crun") is None:
        return "crun not installed (apt-get install crun)"
    from tests.bench import bench_launch  # noqa: PLC0415  (its bundle: the launch bench's sandbox)

    with tempfile.TemporaryDirectory(prefix="sbxd-bench-crun-exec-") as tmp:
        work = Path(tmp)
        rootfs = work / "rootfs"
        bench_launch.busybox_rootfs(rootfs)
        (rootfs / "bin/sleep").symlink_to("busybox")
        bundle = bench_launch.crun_bundle(rootfs, work)
        config = json.loads((bundle / "config.json").read_text())
        config["process"]["args"] = ["/bin/sleep", "100000"]
        (bundle / "config.json").write_text(json.dumps(config))
        name = f"sandboxd-bench-exec-{os.getpid()}"
        out = subprocess.run(
            ["unshare", "-m", sys.executable, "-c", CRUN_EXEC, str(bundle), name, str(n), *argv],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    if out.returncode != 0:
        return f"failed: {out.stderr.strip()[-300:]}"
    cpu, wall = out.stdout.split()
    return f"{cpu} ms CPU per exec, median {wall} ms wall ({n} execs)"


def _latency(window: Window) -> str:
    ms = sorted(window.api_ms)
    return f"median {statistics.median(ms):.1f} ms, p99 {ms[int(len(ms) * 0.99)]:.1f} ms"


def report(units: int, probing: Window, idle: Window, details: list[dict[str, Any]]) -> None:
    durations = [d["health_last_duration"] for d in details if d["health_last_duration"]]
    probes = sum(int(d["health_probes"]) for d in details)
    print(f"daemon CPU with {units} units probed every 1s: {probing.daemon_cpu:.1f}% "
          f"of a core (fork server and probe runners: {probing.server_cpu:.1f}%)")  # fmt: skip
    print(f"daemon CPU, same units without probes:          {idle.daemon_cpu:.1f}% of a "
          f"core (fork server: {idle.server_cpu:.1f}%)")  # fmt: skip
    print(f"status of one unit while probing: {_latency(probing)}; "
          f"without probes: {_latency(idle)}")  # fmt: skip
    per_probe = 10 / max(units, 1)  # % of a core over N probes/s -> ms per probe
    in_daemon = (probing.daemon_cpu - idle.daemon_cpu) * per_probe
    in_server = (probing.server_cpu - idle.server_cpu) * per_probe
    print(f"probe cost: {in_daemon:.2f} ms CPU per probe in the daemon, "
          f"{in_server:.2f} ms in the fork server")  # fmt: skip
    median, worst = statistics.median(durations) * 1000, max(durations) * 1000
    print(f"probe duration (last, as measured): median {median:.1f} ms, "
          f"max {worst:.1f} ms; {probes} probes run")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=100)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--kind", choices=["tcp", "http", "exec", "mix"], default="mix")
    p.add_argument("--peer-execs", type=int, default=200)
    args = p.parse_args()
    if os.geteuid() != 0:
        print("needs root (real sandboxes and cgroups)", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="sbxd-bench-health-", dir="/tmp"))
    daemon = Daemon(base, f"sandboxd-bench-health-{os.getpid()}")
    kinds = ["tcp", "http", "exec"] if args.kind == "mix" else [args.kind]
    names = {f"u{i:03d}": kinds[i % len(kinds)] for i in range(args.units)}
    try:
        for name, kind in names.items():
            daemon.write_unit(name, unit_text(kind, probe=True))
        daemon.start()
        assert daemon.proc is not None
        pid = daemon.proc.pid
        began = time.monotonic()
        wait_for(lambda: all(u["health"] == "healthy" for u in daemon.status().values()), 300,
                 lambda: str({n: u["health"] for n, u in daemon.status().items()
                              if u["health"] != "healthy"}))  # fmt: skip
        print(f"{args.units} units ({args.kind}) healthy after {time.monotonic() - began:.1f}s")
        time.sleep(2)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        first = next(iter(names))
        probing = measure(daemon, fork_server_pid(pid), first, args.seconds)
        details = [daemon.unit(n) for n in names]
        fds_after = len(os.listdir(f"/proc/{pid}/fd"))
        restarts = sum(u["restarts"] for u in daemon.status().values())
        for name, kind in names.items():
            daemon.write_unit(name, unit_text(kind, probe=False))
        daemon.signal(1)  # SIGHUP: reload (restarts every unit without [health])
        wait_for(lambda: all(u["health"] is None and u["state"] == "running"
                             for u in daemon.status().values()), 300)  # fmt: skip
        time.sleep(2)
        idle = measure(daemon, fork_server_pid(pid), first, args.seconds)
        report(args.units, probing, idle, details)
        print(f"daemon fds: {fds} before the window, {fds_after} after; restarts: {restarts}")
        if "exec" in kinds and args.peer_execs > 0:
            print(f"peer: crun exec /bin/true: {crun_exec_cost(args.peer_execs, ['/bin/true'])}")
    finally:
        problems = teardown(daemon)
        shutil.rmtree(base, ignore_errors=True)
    if problems:
        print("LEAKS:", problems, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
