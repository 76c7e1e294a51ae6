"""The escape battery from inside a sandbox the *daemon* starts from a default unit file.

tests/integration/test_escape.py runs the same probe through the launcher directly (both the
fork server and the direct path) and checks each attempt's errno; this thin wrapper runs it as
a real unit (only `exec` and a read-only bind of the probe directory are set, everything else is
the default a user gets) and checks that every attempt of that battery fails here too.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.kit import cgroup_version, uname

pytestmark = [
    pytest.mark.root,
    # Part of the battery is refused by the unit's cgroup (mknod of a device: the devices
    # controller on v1, a BPF device program on v2), and test_escape.py runs only on v1: the v2
    # VM runs this file too (scripts/test-v2.sh selects -m cgroup_v2).
    pytest.mark.cgroup_v2,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]

PROBE_DIR = Path(__file__).resolve().parents[1] / "probe"


def battery() -> tuple[str, ...]:
    """The attempts test_escape.py requires (one list for both suites; read, not imported)."""
    source = (PROBE_DIR.parent / "integration" / "test_escape.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "BATTERY":
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("BATTERY not found in tests/integration/test_escape.py")


def test_default_unit_cannot_escape(sdaemons: Callable[[], Any]) -> None:
    daemon = sdaemons()
    name = uname(daemon, "escapee")
    daemon.write_unit(
        name,
        f"""[service]
exec = ["/usr/bin/python3", "/probe/probe.py", "escape", "{os.getpid()}"]
[sandbox]
mounts = [{{ source = "{PROBE_DIR}", target = "/probe" }}]
[restart]
policy = "no"
""",
    )
    daemon.start()
    done = daemon.wait_unit(name, lambda u: u["state"] in ("exited", "failed"), 120)
    output = (daemon.logs / f"{name}.log").read_text()
    assert done["state"] == "exited" and done["last_exit"] == "exit-code:0", (done, output)
    results = json.loads(output.strip().splitlines()[-1])
    expected = battery()
    assert set(expected) <= set(results), sorted(set(expected) - set(results))
    escaped = {k: v for k, v in results.items() if v["escaped"] is not False}
    assert not escaped, f"escaped from a default sandbox: {escaped}"
    assert daemon.stop() == 0
