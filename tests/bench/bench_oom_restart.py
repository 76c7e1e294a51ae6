"""Reaction times of a real daemon: OOM kill -> the restarted service's exec (restart delay 0),
a crash (exit 1) -> the restarted exec (delay 0), and `sandboxctl reload` -> a new unit running.

    sudo .venv/bin/python -m tests.bench.bench_oom_restart [--cycles 20] [--trace]

OOM: one unit allocates memory at once under memory_max = 32M (no swap), so every run is
OOM-killed a few ms after it starts and restarted with delay "0". The kill's time is the
kernel's (the `oom-kill:` line in /dev/kmsg naming this daemon's cgroup parent); the exec's is
the daemon's `unit.started` event (logged once the exec succeeded). The kernel log's clock is
not CLOCK_MONOTONIC (it drifts from it, tens of ms after a day of uptime), so it is calibrated:
the bench writes a line to /dev/kmsg and takes the stamp the kernel gave it. Crash: the service
(bash) prints the wall time from a builtin (`$EPOCHREALTIME`: no fork) and exits 1 at once;
the time is from that print to the next `unit.started`. Reload: each cycle writes a new unit
file, runs `sandboxctl reload`, and takes the new unit's `unit.started` event. Medians and p95
in ms.

`--trace` (also `python -m tests.bench --only oom --trace`): one more OOM and crash run each,
with the daemon's restart trace on (`SANDBOXD_TRACE_RESTARTS=1`, supervisor/engine/
restarttrace.py): where each restart's time goes, hop by hop, from the kill (or the exit) to
the next exec, median and p95 of each hop.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import kit

MEMHOG = "b = []\nwhile True:\n    b.append(bytearray(4 << 20))\n"
KILLED = re.compile(r"Killed process (\d+) ")


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(len(xs) * 0.95) - 1)]


def wall(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(event["timestamp"]).timestamp()


class Kmsg:
    """OOM kills in /dev/kmsg from now on: `kills`, {victim pid: CLOCK_MONOTONIC seconds}.

    The line taken is "Killed process PID", printed as the SIGKILL is sent; not "oom-kill:",
    which comes with the report the kernel rate-limits (10 in 5 s: most kills of a unit killed
    every few ms have none) and is printed before that report, whose dump takes a while."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDWR | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)
        self.wall_offset = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
        self.mono_offset = self._calibrate()
        self.kills: dict[int, float] = {}

    def _calibrate(self) -> float:
        """CLOCK_MONOTONIC minus the kernel log's clock (printk's local_clock, which is not
        NTP-slewed as CLOCK_MONOTONIC is): a line written now is stamped during the write. The
        largest of a few tries: a stamp can only come after the time read before the write.
        Three tries: the kernel rate-limits writers of /dev/kmsg (10 lines in 5 s)."""
        offsets = []
        for attempt in range(3):
            # Its own text each time: a line the kernel dropped must not be matched by the next.
            marker = f"sandboxd-bench: clock {os.getpid()} {time.time_ns()} {attempt}"
            before = time.clock_gettime(time.CLOCK_MONOTONIC)
            os.write(self.fd, f"{marker}\n".encode())  # a line without one stays open
            give_up = before + 1.0
            while time.clock_gettime(time.CLOCK_MONOTONIC) < give_up:
                try:
                    head, _, text = os.read(self.fd, 8192).decode(errors="replace").partition(";")
                except BlockingIOError:  # not there yet (or dropped): look again
                    time.sleep(0.001)
                    continue
                except BrokenPipeError:  # overwritten records: carry on
                    continue
                if text.startswith(marker):
                    offsets.append(before - int(head.split(",")[2]) / 1e6)
                    break
        if not offsets:
            raise RuntimeError("/dev/kmsg: the calibration line never came back")
        return max(offsets)

    def poll(self) -> None:
        while select.select([self.fd], [], [], 0)[0]:
            try:
                record = os.read(self.fd, 8192).decode(errors="replace")
            except BlockingIOError:
                return
            except OSError:  # EPIPE: overwritten records; carry on
                continue
            head, _, text = record.partition(";")
            if killed := KILLED.search(text):
                self.kills[int(killed[1])] = int(head.split(",")[2]) / 1e6 + self.mono_offset

    def close(self) -> None:
        os.close(self.fd)


TRACE_ENV = {"SANDBOXD_TRACE_RESTARTS": "1"}
KILL = "kernel: OOM kill (kmsg)"
CRASH = "service: its last print, then exit 1"
Stamps = list[tuple[str, float]]  # (stage, CLOCK_MONOTONIC ms), one restart


@dataclass
class Measured:
    delays: list[float]  # ms from the kill (the crash) to the next unit.started
    noticed: list[float] = field(default_factory=list)  # ms from the kill to unit.exited
    traces: list[Stamps] = field(default_factory=list)  # with trace=True


def restart_traces(daemon: Any, name: str) -> list[Stamps]:
    """The daemon's `unit.restart_trace` lines for `name` as absolute CLOCK_MONOTONIC ms."""
    return [
        [(stage, event["t0_ns"] / 1e6 + ms) for stage, ms in event["stages"]]
        for event in daemon.events("unit.restart_trace")
        if event.get("unit") == name
    ]


def with_cause(traces: list[Stamps], causes: list[float], what: str) -> list[Stamps]:
    """Each trace with the latest cause (kill, crash: monotonic ms) before its first stamp;
    a trace with none (the first, whose cause came before the bench read) is left out."""
    out = []
    for stamps in traces:
        first = min(ms for _, ms in stamps)
        before = [c for c in causes if c <= first]
        if before and first - before[-1] < 1000:
            out.append([(what, before[-1]), *stamps])
    return out


def ours(daemon: Any, name: str) -> list[dict[str, Any]]:
    """The `unit.started` events of unit `name`."""
    return [e for e in daemon.events("unit.started") if e.get("unit") == name]


def oom_to_exec(cycles: int, trace: bool = False) -> Measured:
    daemon = kit.new_daemon("bench-oom")
    try:
        name = kit.uname(daemon, "memhog")
        daemon.write_unit(
            name,
            kit.unit_text(
                ["/usr/bin/python3", "-c", MEMHOG], daemon, name,
                resources={"memory_max": "32M", "swap_max": "0"},
                restart={"delay": "0", "burst": 10000, "interval": "1s"},
            ),
        )  # fmt: skip
        kmsg = Kmsg()
        try:
            daemon.start(env=TRACE_ENV if trace else None)
            deadline = time.monotonic() + 60 + cycles * 2
            while len(ours(daemon, name)) < cycles + 3 and time.monotonic() < deadline:
                kmsg.poll()
                time.sleep(0.05)
            daemon.stop()
            kmsg.poll()
        finally:
            kmsg.close()
        started = ours(daemon, name)
        pids = {e["pid"] for e in started}  # the kernel logs every cgroup's kills
        kills = sorted(t for pid, t in kmsg.kills.items() if pid in pids)
        starts = sorted(wall(e) for e in started)
        exits = sorted(wall(e) for e in daemon.events("unit.exited") if e.get("unit") == name)
        delays, noticed = [], []
        for kill in (k + kmsg.wall_offset for k in kills[1:]):  # after a warm-up run
            after = [s for s in starts if s >= kill]
            seen = [x for x in exits if x >= kill]
            if after and seen:
                delays.append((after[0] - kill) * 1000)
                noticed.append((seen[0] - kill) * 1000)
        traces = with_cause(restart_traces(daemon, name), [k * 1000 for k in kills], KILL)
        return Measured(delays[:cycles], noticed[:cycles], traces[:cycles])
    finally:
        finish(daemon)


def crash_to_exec(cycles: int, trace: bool = False) -> Measured:
    """A service that prints the wall time and exits 1 at once, restarted with delay 0: from
    its print (bash's `$EPOCHREALTIME`, a builtin: nothing runs between it and the exit) to
    the next run's `unit.started` (the exec done)."""
    daemon = kit.new_daemon("bench-crash")
    try:
        name = kit.uname(daemon, "crasher")
        daemon.write_unit(
            name,
            kit.unit_text(
                ["/bin/bash", "-c", "echo $EPOCHREALTIME; exit 1"], daemon, name,
                restart={"delay": "0", "burst": 10000, "interval": "1s"},
            ),
        )  # fmt: skip
        wall_to_mono = time.clock_gettime(time.CLOCK_MONOTONIC) - time.time()
        daemon.start(env=TRACE_ENV if trace else None)
        kit.wait_for(lambda: len(daemon.events("unit.started")) >= cycles + 2, 60 + cycles * 2)
        daemon.stop()
        starts = sorted(wall(e) for e in daemon.events("unit.started") if e.get("unit") == name)
        exits = sorted(wall(e) for e in daemon.events("unit.exited") if e.get("unit") == name)
        crashes = [float(x) for x in daemon.output(name).split() if x.replace(".", "").isdigit()]
        delays = []
        for crash in crashes[1:]:  # the first run's start raced the daemon's own start-up
            # The next run's start follows this run's exit: the run's own `unit.started` may
            # be logged after its print (bash is quick to print).
            exit_seen = next((x for x in exits if x >= crash), None)
            after = [s for s in starts if exit_seen is not None and s >= exit_seen]
            if after:
                delays.append((after[0] - crash) * 1000)
        causes = [(c + wall_to_mono) * 1000 for c in crashes]
        traces = with_cause(restart_traces(daemon, name), causes, CRASH)
        return Measured(delays[:cycles], traces=traces[:cycles])
    finally:
        finish(daemon)


def breakdown(traces: list[Stamps], title: str) -> list[str]:
    """Each stage's time since the first (the kill, the crash) and since the stage before it in
    the same restart, median and p95, in the order of their median time since the first."""
    if not traces:
        return [f"{title}: no traced restarts"]
    at: dict[str, list[float]] = {}
    step: dict[str, list[float]] = {}
    for stamps in traces:
        ordered = sorted(stamps, key=lambda s: s[1])
        t0, prev = ordered[0][1], ordered[0][1]
        for stage, ms in ordered:
            at.setdefault(stage, []).append(ms - t0)
            step.setdefault(stage, []).append(ms - prev)
            prev = ms
    lines = [
        f"{title}, {len(traces)} traced restarts (ms; median / p95)",
        f"  {'stage':62} {'since the first':>17} {'since the one before':>21}",
    ]
    for stage in sorted(at, key=lambda s: statistics.median(at[s])):
        a, d = at[stage], step[stage]
        lines.append(f"  {stage[:62]:62} {statistics.median(a):7.2f} / {p95(a):7.2f} "
                     f"{statistics.median(d):9.2f} / {p95(d):7.2f}"
                     + ("" if len(a) == len(traces) else f"  (in {len(a)})"))  # fmt: skip
    return lines


def trace(cycles: int) -> list[str]:
    """The restart breakdowns of an OOM-killed and a crashing unit (the daemon traced)."""
    return [
        *breakdown(oom_to_exec(cycles, trace=True).traces, "OOM kill -> restarted exec"),
        "",
        *breakdown(crash_to_exec(cycles, trace=True).traces, "crash (exit 1) -> restarted exec"),
    ]


def reload_to_running(cycles: int) -> tuple[list[float], list[float]]:
    """(via a fresh `sandboxctl reload` process, via one API call), alternating."""
    daemon = kit.new_daemon("bench-reload")
    try:
        daemon.write_unit("base", kit.unit_text(["/bin/sleep", "100000"], daemon, "base"))
        daemon.start()
        env = {**os.environ, "SANDBOXD_SOCKET": str(daemon.socket)}
        sandboxctl = [str(Path(sys.executable).parent / "sandboxctl")]  # the venv's
        cli: list[float] = []
        api: list[float] = []
        for i in range(cycles * 2):
            name = f"new{i}"
            daemon.write_unit(name, kit.unit_text(["/bin/sleep", "100000"], daemon, name))
            t0 = time.time()
            if i % 2:
                daemon.request("POST", "/v1/reload")
            else:
                subprocess.run([*sandboxctl, "reload"], env=env, check=True, capture_output=True)
            kit.wait_for(lambda n=name: any(
                e.get("unit") == n for e in daemon.events("unit.started")), 30)  # fmt: skip
            (started,) = [e for e in daemon.events("unit.started") if e.get("unit") == name]
            (api if i % 2 else cli).append((wall(started) - t0) * 1000)
        daemon.stop()
        return cli, api
    finally:
        finish(daemon)


def finish(daemon: Any) -> None:
    with contextlib.suppress(Exception):
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
    problems = kit._teardown(daemon)
    shutil.rmtree(daemon.base, ignore_errors=True)
    if problems:
        print(f"cleanup problems: {problems}", file=sys.stderr)


def run(cycles: int = 20) -> dict[str, list[float]]:
    oom = oom_to_exec(cycles)
    crash = crash_to_exec(cycles)
    cli, api = reload_to_running(cycles)
    return {
        "OOM kill -> restarted exec (delay 0)": oom.delays,
        "  of which: OOM kill -> daemon saw the exit": oom.noticed,
        "crash (exit 1) -> restarted exec (delay 0)": crash.delays,
        "sandboxctl reload -> new unit running": cli,
        "  POST /v1/reload -> new unit running": api,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--trace", action="store_true", help="also break each restart down")
    args = parser.parse_args()
    for what, xs in run(args.cycles).items():
        if xs:
            print(f"{what:45} median {statistics.median(xs):7.1f} ms  p95 {p95(xs):7.1f} ms"
                  f"  ({len(xs)} samples)")  # fmt: skip
        else:
            print(f"{what:45} no samples")
    if args.trace:
        print("\n".join(trace(args.cycles)))


if __name__ == "__main__":
    main()
