"""Benchmark the control path at 1000 units as a user runs it: `sandboxctl status` (goal: under
50 ms end to end), a verb that only asks the daemon (`status UNIT`, under 40 ms), issue 23.

The real API server (aiohttp on a Unix socket) serves a fake controller with N units in a
realistic mix of states; each sample is a fresh `sandboxctl` process (interpreter start,
imports, request, JSON, table), timed from fork to exit. Also times the interpreter alone
(`python -c pass`: the floor no client code can go under) and the API alone (GET /v1/units and
GET /v1/top over a kept-alive connection; the fake's, not the engine's views) to show where the
time goes. Prints medians and p95 and exits 1 if a median misses its goal. The same timings
against a real daemon running 1000 real sandboxes (cgroup reads included) are part of
bench_density.py; `python -m tests.bench --only control` puts these in its table.

    .venv/bin/python -m tests.bench.bench_status [-n 1000] [--runs 20]
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from supervisor.api import auth
from supervisor.api.testing import FakeController, ServerThread, many_units
from tests.bench.goals import Row, under
from tests.support.daemon_kit import UnixHTTPConnection

STATUS_GOAL_MS = 50.0  # `sandboxctl status` on 1000 units, end to end
VERB_GOAL_MS = 40.0  # any verb that only talks to the daemon, end to end
LIST_GOAL_MS = 10.0  # the daemon's list view (GET /v1/units) at 1000 units
TOP_GOAL_MS = 50.0  # one `top` frame (GET /v1/top) at 1000 units, issue 26


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"median {statistics.median(ordered):6.1f} ms  p95 {p95:6.1f} ms  min {ordered[0]:6.1f} ms"
    )


class Timing:
    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []  # user + system of the child: less sensitive to host load
        self.size = 0

    def line(self) -> str:
        cpu = statistics.median(self.cpu)
        return f"{_ms(self.wall)}  cpu {cpu:6.1f} ms" + (
            f"  ({self.size} bytes)" if self.size else ""
        )


def client_command() -> list[str]:
    """sandboxctl as scripts/setup.sh installs it: the venv's entry script beside the
    interpreter the bench runs on (`python -m` would add runpy's imports to every sample)."""
    exe = shutil.which("sandboxctl", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "supervisor.cli.main"]


def write_bytecode() -> None:
    """The checkout's bytecode, as an installed sandboxctl has it (pip and the .deb compile
    at install time): scripts/bytecode.sh. Without it, where PYTHONDONTWRITEBYTECODE is set
    (as in the shells of the shared bench host), every sandboxctl process compiled its modules
    from source again: ~25 ms of each `status`, half of what the row measured."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "bytecode.sh"
    subprocess.run([str(script)], check=False)


def interpreter_problems() -> list[str]:
    """Why the interpreter row would not be the floor of the sandboxctl rows, or why both
    would be slower than the README's setup makes them: sandboxctl started by another
    interpreter, or an install that runs an import hook at every start (an old editable
    install's `__editable___*_finder`, ~20 ms a start here, where a fresh scripts/setup.sh
    venv has a plain path .pth)."""
    problems = []
    command = client_command()
    if command[0] == sys.executable:
        problems.append("no sandboxctl beside the interpreter: timed as python -m")
    else:
        with open(command[0], "rb") as script:
            shebang = script.readline().removeprefix(b"#!").split()
        runs = os.fsdecode(shebang[0]) if shebang else ""
        if os.path.realpath(runs) != os.path.realpath(sys.executable):
            problems.append(f"sandboxctl runs {runs}, not {sys.executable}")
    source = Path(__file__).resolve().parents[2] / "supervisor" / "cli" / "main.py"
    if not Path(importlib.util.cache_from_source(str(source))).exists():
        problems.append("no bytecode for the checkout: each sandboxctl compiles its modules "
                        "(run scripts/bytecode.sh)")  # fmt: skip
    hooks = [type(f).__module__ for f in sys.meta_path]
    if any(m.startswith("__editable__") for m in hooks):
        problems.append("an editable install's import hook runs at every start: rerun "
                        "scripts/setup.sh")  # fmt: skip
    return problems


def time_cli(sock: Path, argv: list[str], runs: int, command: list[str] | None = None) -> Timing:
    env = {**os.environ, "SANDBOXD_SOCKET": str(sock)}
    if command is None:
        command = client_command()
    timing = Timing()
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        out = subprocess.run(command + argv, env=env, capture_output=True, check=True).stdout
        timing.wall.append((time.perf_counter() - start) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        timing.cpu.append(cpu * 1000)
        timing.size = len(out) if argv != ["--version"] else 0
    return timing


def time_python(runs: int) -> Timing:
    """The interpreter's own start and exit, as sandboxctl's interpreter starts (site and all)."""
    return time_cli(Path("/nonexistent"), ["-c", "pass"], runs, [sys.executable])


# Requests made before the measured ones, on the same connection: its connect, and the
# daemon's first answer after other work (rows made again after a reload), are not the view's.
API_WARM_UP = 5


def time_api(sock: Path, runs: int, url: str = "/v1/units") -> list[float]:
    """`runs` round trips of GET `url` over one kept-alive connection, after API_WARM_UP."""
    conn = UnixHTTPConnection(str(sock), timeout=30)
    samples = []
    try:
        for i in range(API_WARM_UP + runs):
            start = time.perf_counter()
            conn.request("GET", url)
            response: http.client.HTTPResponse = conn.getresponse()
            response.read()
            if i >= API_WARM_UP:
                samples.append((time.perf_counter() - start) * 1000)
    finally:
        conn.close()
    return samples


@dataclass
class Control:
    python: Timing  # `python -c pass`: the floor
    startup: Timing  # `sandboxctl --version`, which imports every verb
    table: Timing
    as_json: Timing
    one: Timing  # `status UNIT`: a verb that only asks the daemon
    api: list[float]  # GET /v1/units over a kept-alive connection
    top: list[float]  # GET /v1/top


def measure(units: int, runs: int) -> Control:
    sock_dir = Path(tempfile.mkdtemp(prefix="sbx-bench-", dir="/tmp"))
    controller = FakeController(many_units(units))
    try:
        with ServerThread(controller, sock_dir / "control.sock", auth.Policy(None)) as server:
            time_cli(server.path, ["status"], 2)  # warm the page cache
            return Control(
                python=time_python(runs),
                startup=time_cli(server.path, ["--version"], runs),
                table=time_cli(server.path, ["status"], runs),
                as_json=time_cli(server.path, ["status", "--json"], runs),
                one=time_cli(server.path, ["status", "svc-0001"], runs),
                api=time_api(server.path, runs),
                top=time_api(server.path, runs, "/v1/top"),
            )
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def rows(units: int, runs: int) -> list[Row]:
    """The control path against the fake daemon, for `python -m tests.bench --only control`."""
    m = measure(units, runs)
    med = statistics.median
    floor = "; ".join([f"interpreter start alone {med(m.python.wall):.1f} ms",
                       *interpreter_problems()])  # fmt: skip
    where = f"fake daemon, {units} units, median of {runs}"
    return [
        under(f"sandboxctl status ({where})", med(m.table.wall), STATUS_GOAL_MS, "ms",
              f"--json {med(m.as_json.wall):.1f} ms; {floor}"),
        under(f"sandboxctl status UNIT ({where})", med(m.one.wall), VERB_GOAL_MS, "ms", floor),
        Row(f"GET /v1/units alone ({where})", f"{med(m.api):.1f} ms",
            note="the fake's list view; the daemon's is in the density rows"),
        Row(f"GET /v1/top alone ({where})", f"{med(m.top):.1f} ms",
            note="the fake's frame; the daemon's is in the density rows"),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--units", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    write_bytecode()
    m = measure(args.units, args.runs)
    python, startup, table, as_json, one = m.python, m.startup, m.table, m.as_json, m.one
    api, top = m.api, m.top
    print(f"sandboxctl status, {args.units} units, {args.runs} runs each (fresh process per run)")
    print(f"  python -c pass (interpreter floor)   {python.line()}")
    for problem in interpreter_problems():
        print(f"  WARNING: {problem}")
    print(f"  sandboxctl --version (every verb)    {startup.line()}")
    print(f"  sandboxctl status                    {table.line()}")
    print(f"  sandboxctl status --json             {as_json.line()}")
    print(f"  sandboxctl status UNIT               {one.line()}")
    print(f"  GET /v1/units alone (kept-alive)     {_ms(api)}")
    print(f"  GET /v1/top alone (kept-alive)       {_ms(top)}")
    print(
        f"  load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cpus"
    )
    worst = max(statistics.median(table.wall), statistics.median(as_json.wall))
    ok = worst < STATUS_GOAL_MS and statistics.median(one.wall) < VERB_GOAL_MS
    print(
        f"goals: status median under {STATUS_GOAL_MS:.0f} ms, status UNIT under "
        f"{VERB_GOAL_MS:.0f} ms: {'MET' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
