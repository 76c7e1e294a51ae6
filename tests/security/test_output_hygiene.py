"""A service controls some of what `sandboxctl` prints (its STATUS= text, in events and in
`status UNIT`): terminal escapes and bidi controls in it are shown escaped, never acted on
(issue 18, finding 8); `--json` stays exact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from supervisor.cli.render import safe
from tests.support.kit import cgroup_version, uname

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]

# Clear the screen, paint, and reverse the rest of the line: "failed" would read "running".
HOSTILE = "\x1b[2J\x1b[32mrunning\x1b[0m \u202edeliaf\u202c \x07\x9b6n"
NOTIFY = f"""
import os, socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(("READY=1\\nSTATUS=" + {HOSTILE!r}).encode(), os.environ["NOTIFY_SOCKET"])
time.sleep(1000)
"""


def test_service_text_is_escaped_in_tables_and_exact_in_json(
    sdaemons: Callable[[], Any],
) -> None:
    daemon = sdaemons()
    name = uname(daemon, "liar")
    daemon.write_unit(
        name,
        f'[service]\nexec = ["/usr/bin/python3", "-c", {json.dumps(NOTIFY)}]\n'
        'ready = "notify"\nstop_timeout = "300ms"\n',
    )
    daemon.start()
    daemon.wait_unit(name, lambda u: u["state"] == "running")
    sandboxctl = shutil.which("sandboxctl", path=str(Path(sys.executable).parent))
    assert sandboxctl is not None
    env = {**os.environ, "SANDBOXD_SOCKET": str(daemon.socket)}

    def ctl(*argv: str) -> str:
        done = subprocess.run([sandboxctl, *argv], env=env, capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        assert done.returncode == 0, done
        return done.stdout

    for out in (ctl("status", name), ctl("events", name, "--replay", "50", "--no-follow")):
        assert safe(HOSTILE) in out, out
        assert safe(out.replace("\n", "")) == out.replace("\n", ""), "a raw control reached stdout"
    raw = [json.loads(line) for line in ctl("events", name, "--replay", "50", "--no-follow",
                                            "--json").splitlines()]  # fmt: skip
    assert any(e["detail"].get("status_text") == HOSTILE for e in raw), raw
    assert daemon.stop() == 0
