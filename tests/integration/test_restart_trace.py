"""The restart trace through a real daemon (SANDBOXD_TRACE_RESTARTS=1, engine/restarttrace.py):
what `python -m tests.bench --only oom --trace` reads. Checks the stages and their order, never
their durations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from supervisor.engine import restarttrace
from tests.support.daemon_kit import Daemon, wait_for
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root]

CRASHER = """
[service]
exec = ["/bin/sh", "-c", "exit 1"]
[restart]
delay = "0"
burst = 3
"""


def traces(daemon: Daemon) -> list[dict[str, Any]]:
    return [e for e in daemon.events("unit.restart_trace") if e.get("unit") == "crasher"]


def test_a_traced_daemon_logs_each_restart_hop_by_hop(daemon: Daemon) -> None:
    daemon.write_unit("crasher", CRASHER)
    daemon.start(env={restarttrace.ENV: "1"})
    daemon.wait_unit("crasher", lambda u: u["state"] == "failed", 60)
    found = traces(daemon)
    assert len(found) == 2, found  # three launches: a start and two restarts
    started = {e["pid"] for e in daemon.events("unit.started") if e.get("unit") == "crasher"}
    for event in found:
        stages = [stage for stage, _ in event["stages"]]
        times = [ms for _, ms in event["stages"]]
        assert times[0] == 0.0 and times == sorted(times), event
        assert event["pid"] in started and isinstance(event["t0_ns"], int), event
        engine = [s for s in stages if s.startswith("daemon: ") and s in ENGINE]
        assert engine == ENGINE, json.dumps(stages)
        # The launch itself was traced: the launcher's and PID 1's own stamps came back.
        assert any(s.startswith("launcher: ") for s in stages), stages
        assert any(s.startswith("PID 1: ") for s in stages), stages
    daemon.stop()


def test_an_untraced_daemon_logs_no_trace(daemon: Daemon) -> None:
    daemon.write_unit("crasher", CRASHER)
    daemon.start()
    daemon.wait_unit("crasher", lambda u: u["state"] == "failed", 60)
    wait_for(lambda: len(daemon.events("unit.failed")) == 1, 30)
    assert traces(daemon) == []
    daemon.stop()


ENGINE = [
    restarttrace.EXIT_SEEN, restarttrace.RUN_CLEANED, restarttrace.DECIDED,
    restarttrace.LAUNCH_BEGUN, restarttrace.CGROUP_MADE, restarttrace.PID1_REPORTED,
    restarttrace.EXEC_SEEN, restarttrace.RUNNING,
]  # fmt: skip
