"""Run the daemon with its list view (GET /v1/units) measured from inside: bench_listview.py's
wrapper (`Daemon.start(wrapper=...)`), never a production path.

    python -m tests.bench.listview_probe OUT [--profile] -- python -m supervisor ARGS...

The daemon runs in this process (runpy: its PID is the wrapper's, as Daemon.start requires).
Each call of the route's handler is timed in CPU (thread_time: what the loop spent building
the answer, the body's send after it not included) and every garbage collection the daemon
makes meanwhile is recorded (generation, ms, whether it fell inside a handler), for the
requests that carry `X-Bench-Measure` only (the warm-up's and status polls' are left out).
A request with `X-Bench-Dump` writes the figures to OUT (JSON) and, with --profile, the
handler's cProfile to OUT.pstats, before it is answered; the daemon runs on unchanged.
"""

from __future__ import annotations

import cProfile
import gc
import json
import os
import runpy
import sys
import time
from typing import Any

from aiohttp import web

from supervisor.api import routes


def main() -> None:
    split = sys.argv.index("--")
    out, profile = sys.argv[1], "--profile" in sys.argv[2:split]
    daemon_argv = sys.argv[split + 1 :]
    assert daemon_argv[1:3] == ["-m", "supervisor"], daemon_argv
    handler = routes.list_units
    # The handler's CPU, not the wall clock: on a loaded host a preemption would be charged
    # to whichever call it fell in (a pread looked 10 times its cost).
    profiler = cProfile.Profile(time.thread_time) if profile else None
    cpu_ms: list[float] = []
    collections: list[dict[str, Any]] = []
    inside = [False]
    began = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if not cpu_ms and not inside[0]:
            return  # only from the first measured call on
        if phase == "start":
            began[0] = time.thread_time()
        else:
            collections.append({"generation": info["generation"], "inside": inside[0],
                                "ms": (time.thread_time() - began[0]) * 1000})  # fmt: skip

    async def measured(request: web.Request) -> web.Response:
        if "X-Bench-Dump" in request.headers:
            _write(out, cpu_ms, collections, profiler)
        if "X-Bench-Measure" not in request.headers:
            return await handler(request)
        inside[0] = True
        t0 = time.thread_time()
        if profiler is not None:
            profiler.enable()
        try:
            return await handler(request)
        finally:
            if profiler is not None:
                profiler.disable()
            cpu_ms.append((time.thread_time() - t0) * 1000)
            inside[0] = False

    gc.callbacks.append(on_gc)
    routes.list_units = measured  # type: ignore[assignment]  # before make_app reads it
    sys.argv = [daemon_argv[0], *daemon_argv[3:]]
    runpy.run_module("supervisor", run_name="__main__", alter_sys=True)


def _write(out: str, cpu_ms: list[float], collections: list[dict[str, Any]],
           profiler: cProfile.Profile | None) -> None:  # fmt: skip
    with open(out + ".tmp", "w") as f:
        json.dump({"cpu_ms": cpu_ms, "gc": collections, "thresholds": gc.get_threshold(),
                   "frozen": gc.get_freeze_count(), "code": routes.__file__}, f)  # fmt: skip
    if profiler is not None:
        profiler.dump_stats(out + ".pstats")
    os.rename(out + ".tmp", out)


if __name__ == "__main__":
    main()
