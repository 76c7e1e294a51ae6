"""sandboxd from its Debian package, end to end, on a systemd + cgroup v2 host.

One scenario in order: `apt install ./sandboxd_V1.deb` starts the daemon -> a unit runs ->
`apt install ./sandboxd_V2.deb` (a newer build) restarts the daemon with the unit still
running under the same PID -> `apt purge sandboxd` leaves nothing behind (files, units,
directories, the group, the unit's process and cgroup). scripts/test-systemd.sh builds both
packages on the host (the VM has no network) and names them in SANDBOXD_DEBS. Runs before
test_packaging.py (install.sh), on the same VM, and leaves it as it found it.
"""

from __future__ import annotations

import grp
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _systemd import SLOW, alive, main_pid, running, sh, skip_reason, wait_for

_REASON = skip_reason() or (None if os.environ.get("SANDBOXD_DEBS") else "no SANDBOXD_DEBS")
pytestmark = [
    pytest.mark.systemd,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    pytest.mark.timeout(600),
]

DEBS = [Path(p) for p in os.environ.get("SANDBOXD_DEBS", "").split(":") if p]
UNITS = Path("/etc/sandboxd/units")
HOLDER_CGROUP = Path("/sys/fs/cgroup/system.slice/sandboxd-sandboxes.service")
# What the package puts in place (a sample of each kind: venv, links, systemd, man, completion).
PACKAGED = (
    "/opt/sandboxd/venv/bin/sandboxd",
    "/opt/sandboxd/libexec/sandboxd-stop",
    "/usr/bin/sandboxd",
    "/usr/bin/sandboxctl",
    "/lib/systemd/system/sandboxd.service",
    "/lib/systemd/system/sandboxd-sandboxes.service",
    "/usr/lib/tmpfiles.d/sandboxd.conf",
    "/usr/lib/sysusers.d/sandboxd.conf",
    "/usr/share/man/man1/sandboxctl.1.gz",
    "/usr/share/man/man5/sandboxd.unit.5.gz",
    "/usr/share/man/man8/sandboxd.8.gz",
    "/usr/share/bash-completion/completions/sandboxctl",
    "/usr/share/zsh/vendor-completions/_sandboxctl",
    "/etc/sandboxd/sandboxd.toml",
)
# Gone after purge (Debian policy: configuration, data, logs and state too).
PURGED = (
    *PACKAGED,
    "/opt/sandboxd",
    "/etc/sandboxd",
    "/var/lib/sandboxd",
    "/var/log/sandboxd",
    "/run/sandboxd",
    "/etc/systemd/system/multi-user.target.wants/sandboxd.service",
)
LOOP = 'trap "exit 0" TERM; while :; do echo tick; sleep 1 & wait $!; done'
UNIT = f"""
[service]
exec = ["/bin/sh", "-c", '{LOOP}']
stop_timeout = "3s"
"""

state: dict[str, Any] = {}


def apt(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "-y", "-q", "--no-install-recommends", *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, check=False)
    if out.returncode != 0:
        pytest.fail(f"{' '.join(argv)}: exit {out.returncode}\n{out.stdout}\n{out.stderr}")


def version() -> str:
    return sh("dpkg-query", "-W", "-f", "${Version}", "sandboxd").stdout


def deb_version(deb: Path) -> str:
    return sh("dpkg-deb", "-f", str(deb), "Version").stdout.strip()


def test_two_builds_to_install() -> None:
    assert len(DEBS) == 2, DEBS
    old, new = (deb_version(d) for d in DEBS)
    assert sh("dpkg", "--compare-versions", new, "gt", old, check=False).returncode == 0


def test_apt_install_starts_the_daemon() -> None:
    assert not Path("/opt/sandboxd").exists(), "the VM must start without sandboxd"
    apt("install", str(DEBS[0].resolve()))
    assert version() == deb_version(DEBS[0])
    for path in PACKAGED:
        assert Path(path).exists(), path
    assert grp.getgrnam("sandboxd")
    assert sh("systemctl", "is-enabled", "sandboxd").stdout.strip() == "enabled"
    wait_for("sandboxd active", lambda: sh("systemctl", "is-active", "sandboxd",
                                            check=False).stdout.strip() == "active")  # fmt: skip
    assert sh("/usr/bin/sandboxctl", "status").returncode == 0
    assert "sandboxctl" in sh("/usr/bin/sandboxctl", "--help").stdout


def test_a_unit_runs() -> None:
    (UNITS / "svc.toml").write_text(UNIT)
    sh("/usr/bin/sandboxctl", "reload")
    now = wait_for("svc running", running("svc"))
    state["svc"] = now["svc"]["pid"]
    state["daemon"] = main_pid()


def test_upgrade_restarts_the_daemon_and_keeps_the_service() -> None:
    apt("install", str(DEBS[1].resolve()))
    assert version() == deb_version(DEBS[1])
    wait_for("a new daemon", lambda: main_pid() not in (0, state["daemon"]), timeout=SLOW)
    assert not alive(state["daemon"])
    now = wait_for("svc re-adopted", running("svc"))
    assert now["svc"]["pid"] == state["svc"], "the upgrade restarted the service"
    assert alive(state["svc"])


def test_purge_leaves_nothing() -> None:
    apt("purge", "sandboxd")
    assert sh("dpkg-query", "-W", "-f", "${Status}", "sandboxd", check=False).stdout in (
        "",
        "unknown ok not-installed",
    )
    wait_for("svc stopped", lambda: not alive(state["svc"]))
    for path in PURGED:
        assert not os.path.lexists(path), path
    assert not HOLDER_CGROUP.exists()
    try:
        grp.getgrnam("sandboxd")
    except KeyError:
        pass
    else:
        pytest.fail("the sandboxd group survived the purge")
    for unit in ("sandboxd.service", "sandboxd-sandboxes.service"):
        out = sh("systemctl", "show", "-p", "LoadState", "--value", unit).stdout.strip()
        assert out == "not-found", (unit, out)
