"""The daemon's import set at start: no console-only or rarely used packages (issue 23, the
daemon's fixed memory).

Every module the daemon imports stays resident for its whole life. Pinned here, in a fresh
interpreter that imports the daemon's entry point and configures logging as `sandboxd` does
(JSON, stderr not a terminal), then validates a unit like the bench's (own namespaces, no
network): rich and pygments (pulled in by structlog.dev whenever installed, ~2-3 MB),
pyroute2 (only for units with a network, ~1 MB more), prometheus_client (at the first scrape,
~1 MB) and the cluster agent (with a [cluster] only) must not come in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import supervisor

# Packages the daemon must not load for the bench's units; each was measured in its RssAnon.
# The cluster agent comes with a [cluster] only.
# prometheus_client (~1 MB) comes at the first scrape of /metrics (api/promexport.py).
UNWANTED = ("rich", "pygments", "pyroute2", "supervisor.cluster", "prometheus_client")

PROBE = """
import json, sys
import supervisor.daemon
from supervisor import log
from supervisor.unit.schema import UnitFile
log.configure("auto")
log.get_logger().info("probe.logged", unit="x")
UnitFile.model_validate({"service": {"exec": ["/bin/sleep", "1000"]}})
print(json.dumps(sorted(m for m in sys.modules if m.startswith(tuple(sys.argv[1:])))))
"""


def _run(probe: str, *args: str) -> subprocess.CompletedProcess[str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(supervisor.__file__)))
    return subprocess.run(
        [sys.executable, "-c", probe, *args],
        env={**os.environ, "PYTHONPATH": root},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
    )


def test_the_daemon_at_start_imports_no_console_network_or_cluster_package() -> None:
    out = _run(PROBE, *UNWANTED)
    assert "probe.logged" in out.stderr  # the chain still renders (JSON)
    assert json.loads(out.stdout) == []


def test_rich_stays_importable_after_the_log_module() -> None:
    """The block that keeps rich out of structlog lasts for that import only: a dev tool or a
    test that imports rich later in the same process gets it."""
    pytest.importorskip("rich")
    probe = "import supervisor.log\nimport rich\nprint(rich.__name__)\n"
    assert _run(probe).stdout.strip() == "rich"


def test_the_console_renderer_still_prints_a_traceback() -> None:
    """format_exc_info turns an exception into text before the renderer, so structlog's console
    renderer (without rich) still shows the traceback in full."""
    probe = """
from supervisor import log
log.configure("console")
try:
    raise ValueError("boom")
except ValueError:
    log.get_logger().exception("probe.logged")
"""
    err = _run(probe).stderr
    assert "probe.logged" in err
    assert "Traceback (most recent call last)" in err
    assert "ValueError: boom" in err
