"""Symlinks planted by a sandbox or left in the daemon's own trees (issue 18, findings 4, 5).

Finding 4: a sandbox with a writable bind of a host directory replaces `shared/app` with a
symlink to /etc; a neighbour whose bind source is `shared/app/ssl` must not get the host's
/etc/ssl. The launch refuses it (naming the path), and `sandboxctl validate` names the link.

Finding 5: `<log_dir>/<unit>.log` planted as a symlink (or a hard link, or a FIFO) must never
be written through; the daemon leaves it alone, drops the unit's output with one warning
saying why, and resumes (with a marker line) once it is removed.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.kit import cgroup_version, uname, unit_text, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]

SWAP = "rm -rf /shared/app && ln -s /etc /shared/app && echo swapped && exec sleep 100000"


def mounts(source: Path, target: str, read_only: bool = True) -> str:
    return (
        f"[sandbox]\nmounts = [{{ source = {json.dumps(str(source))}, "
        f"target = {json.dumps(target)}, read_only = {str(read_only).lower()} }}]\n"
    )


def test_a_neighbour_cannot_point_a_bind_source_at_the_hosts_etc(
    sdaemons: Callable[[], Any],
) -> None:
    daemon = sdaemons()
    shared = daemon.base / "shared"
    (shared / "app" / "ssl").mkdir(parents=True)
    (shared / "app" / "ssl" / "ours").write_text("ours\n")
    for writable in (shared, shared / "app", shared / "app" / "ssl"):
        # The swapper's root is an unprivileged host uid (its own user namespace): the shared
        # tree is open to it, as a directory two units share must be.
        writable.chmod(0o777)
    swapper, victim = uname(daemon, "swapper"), uname(daemon, "victim")
    daemon.write_unit(swapper, unit_text(["/bin/sh", "-c", SWAP], daemon, swapper)
                      + mounts(shared, "/shared", read_only=False))  # fmt: skip
    daemon.start()
    log = daemon.logs / f"{swapper}.log"
    wait_for(lambda: log.exists() and "swapped" in log.read_text(), 60, log.read_text)
    assert os.readlink(shared / "app") == "/etc", "the swap happened on the host"

    source = shared / "app" / "ssl"
    text = unit_text(["/bin/ls", "-a", "/ssl"], daemon, victim, restart={"policy": "no"})
    daemon.write_unit(victim, text + mounts(source, "/ssl"))
    code, body = daemon.request("POST", "/v1/reload")
    assert code == 200, body
    done = daemon.wait_unit(victim, lambda u: u["state"] in ("failed", "exited"), 60)
    output = (daemon.logs / f"{victim}.log").read_text() if done["state"] == "exited" else ""
    assert done["state"] == "failed", f"it ran and saw the host's /etc/ssl: {output!r}"
    assert done["last_exit"] == (
        f"launch-error:rootfs: bind source {source} has a symlink in its path; sandboxd never "
        "follows one there (name the real path)"
    )

    unit_file = daemon.units / f"{victim}.toml"
    check = subprocess.run(
        [sys.executable, "-m", "supervisor.cli.main", "validate", str(unit_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check  # a host check is a warning
    assert (
        f"sandbox.mounts[0].source: warning: {shared}/app is a symlink (to /etc), and sandboxd "
        "follows none in a bind source: the unit will fail to start; name the real path"
    ) in check.stderr, check.stderr
    assert daemon.stop() == 0


PLANTS = {
    "symlink": "is a symlink, and sandboxd follows none here",
    "hardlink": "has 1 other hard link(s)",
    "fifo": "is not a regular file",
}
TALK = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done"


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_a_planted_log_file_is_never_written_through(
    sdaemons: Callable[[], Any], plant: str
) -> None:
    daemon = sdaemons()
    name = uname(daemon, "talker")
    target = daemon.base / "victim"
    target.write_text("untouched\n")
    daemon.logs.mkdir()
    log = daemon.logs / f"{name}.log"
    if plant == "symlink":
        log.symlink_to(target)
    elif plant == "hardlink":
        os.link(target, log)
    else:
        os.mkfifo(log)  # the old daemon's open(O_WRONLY) blocked on it forever
    daemon.write_unit(name, unit_text(["/bin/sh", "-c", TALK], daemon, name))
    daemon.start()

    def dropping() -> list[dict[str, Any]]:
        return [e for e in daemon.events("unit.output_dropping") if e.get("unit") == name]

    wait_for(lambda: bool(dropping()), 60, lambda: daemon.stderr_path().read_text()[-3000:])
    (event,) = dropping()
    assert (event["file"], event["error"]) == (str(log), PLANTS[plant])
    assert target.read_text() == "untouched\n"

    log.unlink()  # the operator removes what was planted: output comes back
    wait_for(lambda: log.exists() and "tick" in log.read_text(), 60)
    first = log.read_text().splitlines()[0]
    assert first.startswith("[sandboxd: ") and first.endswith(
        f" bytes of output dropped: {PLANTS[plant]}]"
    ), first
    st = os.lstat(log)
    assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and stat.S_IMODE(st.st_mode) == 0o640
    assert target.read_text() == "untouched\n"
    assert daemon.stop() == 0
