"""API authorization against a real daemon (the handlers' policy is unit-tested with a fake
controller in tests/unit/api/test_auth.py; this checks the daemon as shipped).

Peers are real processes run as uid/gid nobody: the socket's 0660 mode refuses them at connect;
with the mode widened by mistake, SO_PEERCRED still refuses them (403) and nothing happens;
members of the configured group may read but get 403 on every mutating call.
"""

from __future__ import annotations

import grp
import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.kit import cgroup_version, pid1s, uname, unit_text

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]

NOBODY = 65534
GROUP = "users"  # the configured read group; nobody is a member only when given it as extra


def _gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


GID = _gid(GROUP)
pytestmark.append(pytest.mark.skipif(GID is None, reason="needs a group named users"))

# Runs as the peer: one request, prints "<status>" or "connect:<errno name>".
CLIENT = r"""
import errno, http.client, socket, sys
method, path, sock_path = sys.argv[1:4]
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(sock_path)
c = C("localhost", timeout=20)
try:
    c.request(method, path, body=b"{}" if method == "POST" else None,
              headers={"Content-Type": "application/json"})
except OSError as exc:
    print("connect:" + errno.errorcode.get(exc.errno or 0, str(exc)))
    sys.exit(0)
print(c.getresponse().status)
"""
MUTATING = (
    ("POST", "/v1/reload"),
    ("POST", "/v1/units/{u}/stop"),
    ("POST", "/v1/units/{u}/restart"),
    ("POST", "/v1/units/{u}/start"),
)
READING = (("GET", "/v1/units"), ("GET", "/v1/units/{u}"), ("GET", "/v1/units/{u}/logs"))


def as_nobody(daemon: Any, method: str, path: str, groups: list[int] | None = None) -> str:
    proc = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", CLIENT, method, path, str(daemon.socket)],
        user=NOBODY, group=NOBODY, extra_groups=groups or [],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return proc.stdout.strip()


def test_unprivileged_peers(sdaemons: Callable[[], Any]) -> None:
    daemon = sdaemons()
    daemon.config.write_text(f'group = "{GROUP}"\n')
    name = uname(daemon, "web")
    daemon.write_unit(name, unit_text(["/bin/sleep", "100000"], daemon, name))
    daemon.start()
    before = daemon.wait_unit(name, lambda u: u["state"] == "running")
    st = daemon.socket.stat()
    assert st.st_mode & 0o777 == 0o660 and st.st_gid == GID, (oct(st.st_mode), st.st_gid)
    # The base dir is 0700 from mkdtemp: let nobody reach the socket at all.
    os.chmod(daemon.base, 0o755)
    calls = [(m, p.format(u=name)) for m, p in (*MUTATING, *READING)]

    # 1. A stranger (not in the group): the file mode refuses the connection itself.
    os.chown(daemon.socket, 0, 0)
    for method, path in calls:
        assert as_nobody(daemon, method, path) == "connect:EACCES", (method, path)
    # 2. The mode widened by mistake: SO_PEERCRED still refuses everything.
    os.chmod(daemon.socket, 0o666)
    for method, path in calls:
        assert as_nobody(daemon, method, path) == "403", (method, path)
    # 3. A member of the configured group: reads yes, mutations no.
    os.chmod(daemon.socket, 0o660)
    assert GID is not None
    os.chown(daemon.socket, 0, GID)
    for method, path in READING:
        assert as_nobody(daemon, method, path.format(u=name), [GID]) == "200", path
    for method, path in MUTATING:
        assert as_nobody(daemon, method, path.format(u=name), [GID]) == "403", path
    # Nothing happened: same run, no reload, no stop.
    after = daemon.status()[name]
    assert (after["state"], after["pid"], after["restarts"]) == ("running", before["pid"], 0)
    assert pid1s(daemon)[name] == [before["pid"]]
    assert len(daemon.events("daemon.reloaded")) == 1  # the startup reload only
    assert daemon.stop() == 0
