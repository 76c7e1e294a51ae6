"""[credentials] through a real daemon: where the secret is, who can read it, where it is not."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon_kit import Daemon
from tests.support.requires import requires_root
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.root, requires_root]

SECRET = b"s3cret-" + os.urandom(12).hex().encode()
CTL = [sys.executable, "-m", "supervisor.cli.main"]

# The service says only a digest of what it read (its log must not hold the secret).
UNIT = """
[service]
exec = ["/bin/sh", "-c", "sha256sum $CREDENTIALS_DIRECTORY/db_password; exec sleep 1000"]
user = "nobody"
stop_timeout = "500ms"
[credentials]
db_password = {{ file = "{source}" }}
"""


def ctl(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SANDBOXD_SOCKET": str(d.socket)}
    return subprocess.run(
        [*CTL, *args], env=env, text=True, capture_output=True, check=False, timeout=60
    )


def _secret_file(tmp: Path, data: bytes) -> Path:
    path = tmp / "secret"
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def test_credential_seen_by_its_user_only_and_nowhere_else(daemon: Daemon, tmp_path: Path) -> None:
    source = _secret_file(tmp_path, SECRET)
    daemon.write_unit("db", UNIT.format(source=source))
    daemon.write_unit(
        "neighbour",
        '[service]\nexec = ["/bin/sh", "-c", "exec sleep 1000"]\nstop_timeout = "500ms"\n',
    )
    daemon.start()
    unit = daemon.wait_unit("db", lambda u: u["state"] == "running")
    daemon.wait_unit("neighbour", lambda u: u["state"] == "running")
    pid = unit["pid"]
    digest = hashlib.sha256(SECRET).hexdigest()
    wait_for(lambda: digest in daemon.output("db"), 30, lambda: daemon.output("db"))

    # The service's user reads it, through `sandboxctl exec` too (the same mount namespace).
    seen = ctl(daemon, "exec", "db", "--", "/bin/sh", "-c",
               'stat -c "%a %U" "$CREDENTIALS_DIRECTORY/db_password" "$CREDENTIALS_DIRECTORY";'
               ' sha256sum < "$CREDENTIALS_DIRECTORY/db_password"')  # fmt: skip
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout.split("\n")[:2] == ["400 nobody", "500 nobody"]
    assert digest in seen.stdout
    # Read-only even for its owner: the service cannot replace it.
    write = ctl(daemon, "exec", "db", "--", "/bin/sh", "-c", "echo x > /run/credentials/new")
    assert write.returncode != 0 and "Read-only" in write.stderr, write

    # Another uid inside the same sandbox: EACCES.
    other = subprocess.run(
        ["nsenter", "-t", str(pid), "-m", "-p", "-r", "-S", "1", "-G", "1",
         "cat", "/run/credentials/db_password"],
        capture_output=True, check=False, timeout=30,
    )  # fmt: skip
    assert other.returncode != 0 and b"Permission denied" in other.stderr, other
    # An unprivileged host user, through the sandbox's /proc/PID/root: refused. (Without a
    # user namespace, a host process of the service's own uid could ptrace it and read it.)
    host_user = subprocess.run(
        ["setpriv", "--reuid=12345", "--regid=12345", "--clear-groups",
         "cat", f"/proc/{pid}/root/run/credentials/db_password"],
        capture_output=True, check=False, timeout=30,
    )  # fmt: skip
    assert host_user.returncode != 0 and SECRET not in host_user.stdout
    # Root in a neighbour sandbox sees neither the process nor the directory.
    neighbour = ctl(daemon, "exec", "neighbour", "--", "/bin/sh", "-c",
                    "cat /proc/*/root/run/credentials/* /run/credentials/* 2>&1; "
                    "grep -r s3cret- /run /tmp /proc/*/environ 2>/dev/null; true")  # fmt: skip
    assert SECRET.decode() not in neighbour.stdout + neighbour.stderr

    # Not in the environment, status, the API, the mount options, or any daemon-owned file.
    with open(f"/proc/{pid}/environ", "rb") as f:
        environ = f.read()
    assert SECRET not in environ and b"CREDENTIALS_DIRECTORY=/run/credentials" in environ
    with open(f"/proc/{pid}/mountinfo", "rb") as f:
        mountinfo = f.read()
    assert SECRET not in mountinfo
    (line,) = [m for m in mountinfo.decode().splitlines() if " /run/credentials " in m]
    assert " ro," in line and "ramfs" in line, line
    status = ctl(daemon, "status", "--json")
    assert status.returncode == 0 and SECRET.decode() not in status.stdout
    _, body = daemon.request("GET", "/v1/units/db")
    assert SECRET.decode() not in repr(body)
    for path in daemon.base.rglob("*"):
        # The holder of user namespaces (state/userns/mnt) is an nsfs file bound there: no
        # bytes to read.
        if path.is_file() and not path.is_socket() and not os.path.ismount(path):
            assert SECRET not in path.read_bytes(), path


def test_changed_source_restarts_on_reload_and_missing_is_an_error(
    daemon: Daemon, tmp_path: Path
) -> None:
    source = _secret_file(tmp_path, b"one")
    daemon.write_unit("db", UNIT.format(source=source))
    daemon.start()
    first = daemon.wait_unit("db", lambda u: u["state"] == "running")
    unchanged = ctl(daemon, "reload", "--json")
    assert unchanged.returncode == 0 and '"unchanged": ["db"]' in unchanged.stdout.replace(
        '"unchanged":["db"]', '"unchanged": ["db"]'
    ), unchanged.stdout
    source.write_bytes(b"two")
    changed = ctl(daemon, "reload")
    assert changed.returncode == 0 and "restarted: db" in changed.stdout, changed.stdout
    second = daemon.wait_unit("db", lambda u: u["state"] == "running" and u["pid"] != first["pid"])
    digest = hashlib.sha256(b"two").hexdigest()
    wait_for(lambda: digest in daemon.output("db"), 30, lambda: daemon.output("db"))

    # Gone before a start: launch-error:credentials; gone at reload: an error naming the key.
    source.unlink()
    restart = ctl(daemon, "restart", "db")
    failed = daemon.wait_unit("db", lambda u: u["state"] == "failed")
    assert failed["last_exit"].startswith("launch-error:credentials: credentials.db_password.file")
    assert second["pid"] != failed.get("pid"), restart
    invalid = ctl(daemon, "validate", str(daemon.units / "db.toml"))
    assert invalid.returncode != 0
    assert "credentials.db_password.file" in invalid.stdout + invalid.stderr, invalid


@pytest.mark.usefixtures("not_a_subreaper")
def test_an_inline_value_survives_a_daemon_kill9_without_a_restart(daemon: Daemon) -> None:
    daemon.write_unit(
        "tok",
        '[service]\nexec = ["/bin/sh", "-c", "exec sleep 1000"]\nstop_timeout = "500ms"\n'
        '[restart]\ndelay = "100ms"\n[credentials]\ntoken = { value = "v4lue-kept" }\n',
    )
    daemon.start()
    first = daemon.wait_unit("tok", lambda u: u["state"] == "running")
    daemon.wait_recorded()
    daemon.kill9()
    daemon.start()
    again = daemon.wait_unit("tok", lambda u: u["state"] == "running")
    assert again["pid"] == first["pid"] and again["restarts"] == 0, daemon.events("store.ignored")
    reload = ctl(daemon, "reload")
    assert "restarted" not in reload.stdout, reload.stdout
    # The next run (after the first reload read the file again) gets the value, not "(hidden)".
    os.kill(first["pid"], 9)  # the sandbox this test's daemon started
    daemon.wait_unit("tok", lambda u: u["state"] == "running" and u["pid"] != first["pid"])
    seen = ctl(daemon, "exec", "tok", "--", "/bin/cat", "/run/credentials/token")
    assert seen.stdout == "v4lue-kept", seen
    for path in daemon.state.rglob("*"):
        if path.is_file() and not os.path.ismount(path):  # not a held user namespace
            assert b"v4lue-kept" not in path.read_bytes(), path


def test_an_exec_probe_sees_the_credentials(daemon: Daemon, tmp_path: Path) -> None:
    source = _secret_file(tmp_path, SECRET)
    daemon.write_unit(
        "db",
        UNIT.format(source=source)
        + '[health]\nexec = ["/bin/sh", "-c", "test -r $CREDENTIALS_DIRECTORY/db_password"]\n'
        'interval = "200ms"\n',
    )
    daemon.start()
    daemon.wait_unit("db", lambda u: u["state"] == "running" and u.get("health") == "healthy")


def test_in_a_user_namespace_the_files_belong_to_the_mapped_user(daemon: Daemon) -> None:
    daemon.write_unit(
        "u",
        '[service]\nexec = ["/bin/sh", "-c", "exec sleep 1000"]\nuser = "nobody"\n'
        'stop_timeout = "500ms"\n[sandbox]\n'
        'namespaces = ["pid", "mount", "uts", "ipc", "net", "cgroup", "user"]\n'
        '[credentials]\nt = { value = "v4lue-userns" }\n',
    )
    daemon.start()
    daemon.wait_unit("u", lambda u: u["state"] == "running")
    seen = ctl(daemon, "exec", "u", "--", "/bin/sh", "-c", "stat -c '%a %u' /run/credentials/t; "
               "cat /run/credentials/t")  # fmt: skip
    assert seen.stdout == "400 65534\nv4lue-userns", seen
