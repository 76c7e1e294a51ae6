"""What a service may hold, seen from inside sandboxes a real daemon starts (issue 18, 2 and 7).

- Root gets Podman's default capabilities: no NET_RAW (raw sockets forge packets on a bridge),
  yet `ping` works through ICMP datagram sockets (ping_group_range).
- A non-root `user` holds no capability at all unless the unit lists some, so `nobody` cannot
  setuid(0) back (before: the 14 defaults stayed effective and ambient for uid 65534).
- Listed capabilities reach a non-root user as ambient ones; `sandboxctl exec` into a sandbox
  never gets more than its PID 1 holds.
- /tmp and /run are bounded tmpfs (before: half of the host's RAM each).
"""

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

from supervisor.linux.caps import mask_of
from supervisor.sandbox.host.launch import EXEC_ONLY_CAPABILITIES
from supervisor.sandbox.host.rootplan import DEV_SIZE
from supervisor.unit.schema import DEFAULT_CAPABILITIES, RUN_SIZE, TMP_SIZE
from tests.support.kit import cgroup_version, uname

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]

# Run inside the sandbox by the host's python3 (root = "host" shows the host's /usr read-only).
PROBE = r"""
import errno, json, os, socket, subprocess
lines = open("/proc/self/status").read().splitlines()
status = dict(l.split(":\t", 1) for l in lines if ":\t" in l)
out = {k: int(status[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
out["uid"] = os.getuid()
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
out["setuid0"] = attempt(lambda: os.setuid(0))
raw = lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
out["raw_socket"] = attempt(raw)
def bind80():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 80))
out["bind80"] = attempt(bind80)
def ping():
    r = subprocess.run(["ping", "-c", "1", "-W", "5", "127.0.0.1"], capture_output=True)
    if r.returncode != 0:
        raise OSError(errno.EIO, r.stderr.decode())
out["ping"] = attempt(ping) if os.path.exists("/usr/bin/ping") else "absent"
for path in ("/tmp", "/run"):
    st = os.statvfs(path)
    out["size" + path] = st.f_blocks * st.f_frsize
print(json.dumps(out), flush=True)
"""


def _unit(**sections: str) -> str:
    text = '[service]\nexec = ["/usr/bin/python3", "-c", \'\'\'' + PROBE + "''']\n"
    text += "".join(sections.values())
    return text + '[restart]\npolicy = "no"\n'


def _result(daemon: Any, name: str) -> dict[str, Any]:
    done = daemon.wait_unit(name, lambda u: u["state"] in ("exited", "failed"), 60)
    output = (daemon.logs / f"{name}.log").read_text()
    assert done["last_exit"] == "exit-code:0", (done, output)
    return dict(json.loads(output.strip().splitlines()[-1]))


def test_capabilities_by_user_and_bounded_tmp(sdaemons: Callable[[], Any]) -> None:
    daemon = sdaemons()
    root, nobody, granted = (uname(daemon, n) for n in ("root", "nobody", "granted"))
    daemon.write_unit(root, _unit())
    daemon.write_unit(nobody, _unit(service='user = "nobody"\n'))
    daemon.write_unit(
        granted,
        _unit(
            service='user = "nobody"\n',
            security='[security]\ncapabilities = ["NET_BIND_SERVICE"]\n',
        ),
    )
    daemon.start()
    default = mask_of(DEFAULT_CAPABILITIES)
    bounding = default | mask_of(EXEC_ONLY_CAPABILITIES)  # exec of cap_net_raw=ep ping

    as_root = _result(daemon, root)
    assert as_root["CapEff"] == as_root["CapPrm"] == default
    assert as_root["CapBnd"] == bounding
    assert as_root["raw_socket"] == "EPERM", "no NET_RAW by default"
    if as_root["ping"] != "absent":
        assert as_root["ping"] == "ok", "ping works without NET_RAW (ICMP datagram sockets)"
    # One tmpfs (/dev's) holds /dev/shm, /tmp and /run, bounded by their sizes' sum.
    shared = DEV_SIZE + TMP_SIZE + RUN_SIZE
    assert (as_root["size/tmp"], as_root["size/run"]) == (shared, shared)

    as_nobody = _result(daemon, nobody)
    assert as_nobody["uid"] == 65534
    for held in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert as_nobody[held] == 0, (held, as_nobody)
    assert as_nobody["CapBnd"] == bounding
    assert as_nobody["setuid0"] == "EPERM", "nobody cannot become root again"
    assert as_nobody["bind80"] == "EACCES"

    as_granted = _result(daemon, granted)
    bit = 1 << 10  # NET_BIND_SERVICE
    for held in ("CapPrm", "CapEff", "CapAmb"):
        assert as_granted[held] == bit, (held, as_granted)
    assert as_granted["CapBnd"] == bit | mask_of(EXEC_ONLY_CAPABILITIES)
    assert as_granted["bind80"] == "ok" and as_granted["setuid0"] == "EPERM"
    assert daemon.stop() == 0


def test_exec_into_a_non_root_sandbox_gets_no_capabilities(sdaemons: Callable[[], Any]) -> None:
    daemon = sdaemons()
    name = uname(daemon, "idle")
    daemon.write_unit(
        name, '[service]\nexec = ["/bin/sleep", "1000"]\nuser = "nobody"\nstop_timeout = "300ms"\n'
    )
    daemon.start()
    daemon.wait_unit(name, lambda u: u["state"] == "running")
    sandboxctl = shutil.which("sandboxctl", path=str(Path(sys.executable).parent))
    assert sandboxctl is not None
    script = "import os; print(open('/proc/self/status').read()); os.setuid(0)"
    done = subprocess.run(
        [sandboxctl, "exec", name, "--", "/usr/bin/python3", "-c", script],
        env={**os.environ, "SANDBOXD_SOCKET": str(daemon.socket)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    status = dict(line.split(":\t", 1) for line in done.stdout.splitlines() if ":\t" in line)
    assert int(status["Uid"].split()[0]) == 65534, done
    for held in ("CapPrm", "CapEff", "CapAmb"):
        assert int(status[held], 16) == 0, (held, status[held])
    assert done.returncode != 0 and "PermissionError" in done.stderr
    assert daemon.stop() == 0
