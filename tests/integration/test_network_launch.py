"""Network modes through the real launch path: `launch()` → `attach()` → `go()`, as the daemon.

The sandboxes here are the launcher's own: PID 1 in fresh namespaces, the host's /usr read-only,
a curated /etc, `lo` brought up by PID 1. Servers and clients are the services themselves
(/usr/bin/python3), so what is proven is what a unit would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_network_bridge import (  # the bridge fixture and link checks
    Env,
    _netns_in_use,
    env,
    has_link,
    wait_gone,
    wait_http,
)

from supervisor.errors import NetworkError
from supervisor.sandbox.host.launch import Launched, LaunchRequest, launch
from supervisor.unit.spec import UnitSpec
from tests.support import harness

__all__ = ["env"]  # a fixture, imported for pytest
pytestmark = harness.LAUNCH_MARKS
PYTHON = harness.HOST_PYTHON

# Lists the sandbox's interfaces and talks TCP over 127.0.0.1 and ::1, then prints JSON.
NET_PROBE = """
import json, socket
ok = {}
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    with socket.socket(family) as srv:
        srv.bind((host, 0)); srv.listen()
        with socket.create_connection((host, srv.getsockname()[1]), timeout=2) as c:
            peer, _ = srv.accept(); c.sendall(b"ping"); ok[host] = peer.recv(4) == b"ping"
            peer.close()
print(json.dumps({"interfaces": sorted(n for _, n in socket.if_nameindex()), "loopback": ok}))
"""

# A real client in a sandbox: GET the URL until it answers (the server may still be starting).
HTTP_CLIENT = """
import sys, time, urllib.request
deadline = time.monotonic() + 20
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
            sys.stdout.write(r.read().decode()); break
    except OSError:
        if time.monotonic() > deadline: raise
        time.sleep(0.1)
"""


@pytest.fixture(scope="module", autouse=True)
def _subreaper() -> None:
    harness.set_subreaper()


@dataclass
class Box:
    spec: UnitSpec
    launched: Launched
    out_r: int
    status: int | None = None

    @property
    def pid(self) -> int:
        return self.launched.pid

    def output(self, timeout: float = 30) -> str:
        """Everything the service writes until it exits; then reap it (exit status 0)."""
        data: bytes = harness._drain([self.out_r], self.pid, time.monotonic() + timeout)[self.out_r]
        self.reap()
        assert self.status == 0, f"{self.spec.name} exited with status {self.status}"
        return data.decode()

    def reap(self, sig: int | None = None) -> None:
        if self.status is None:
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)
            self.status = os.waitpid(self.pid, 0)[1]
            os.close(self.out_r)


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    """Undoes launches last-in first-out: each service is killed and reaped before its
    cgroup is removed."""
    with contextlib.ExitStack() as undo:
        yield undo


def start(env: Env, stack: contextlib.ExitStack, spec: UnitSpec) -> Box:
    """prepare → launch → attach → go (as the engine does); abort the launch if attach fails."""
    procs = stack.enter_context(harness.v1_cgroup())
    plan = asyncio.run(env.net.prepare(spec.name, spec.unit.network))
    out_r, out_w = os.pipe()
    try:
        launched = launch(LaunchRequest(spec, procs, out_w, out_w, id_map=harness.id_map_for(spec)))
    except BaseException:
        os.close(out_r)
        raise
    finally:
        os.close(out_w)
    box = Box(spec, launched, out_r)
    stack.callback(box.reap, signal.SIGKILL)
    try:
        asyncio.run(env.net.attach(plan, launched.pid))
    except NetworkError:
        launched.abort()
        box.reap()
        raise
    # What the launcher checks before each fork of the daemon: netlink left no thread.
    assert threading.active_count() == 1
    launched.go()
    return box


def test_mode_none_has_only_lo_and_loopback_works(env: Env, stack: contextlib.ExitStack) -> None:
    box = start(env, stack, harness.unit([PYTHON, "-c", NET_PROBE], name="isolated"))
    info = json.loads(box.output())
    assert info == {"interfaces": ["lo"], "loopback": {"127.0.0.1": True, "::1": True}}
    assert not (env.config.data_dir / "network").exists()  # no lease for mode none


def test_mode_host_shares_the_host_netns(env: Env, stack: contextlib.ExitStack) -> None:
    spec = harness.unit(["/bin/sleep", "30"], name="hostnet", network={"mode": "host"})
    assert "net" not in spec.unit.sandbox.namespaces
    box = start(env, stack, spec)
    assert os.stat(f"/proc/{box.pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    assert os.stat(f"/proc/{box.pid}/ns/mnt").st_ino != os.stat("/proc/self/ns/mnt").st_ino


def test_bridge_server_answers_a_sandbox_and_the_host(
    env: Env, stack: contextlib.ExitStack
) -> None:
    # Not tmp_path (pytest keeps it root's alone): the server's root, an unprivileged host uid
    # in its own user namespace, must reach the bind source.
    www = Path(tempfile.mkdtemp(prefix="sbx-www-"))
    stack.callback(shutil.rmtree, www)
    www.chmod(0o755)
    (www / "hello.txt").write_text("hello over the bridge\n")
    # No --bind: http.server then looks up the sandbox's own hostname, which the sandbox's
    # /etc/hosts answers, instead of reverse-resolving its IP through an unreachable DNS.
    server = harness.unit(
        [PYTHON, "-m", "http.server", "8080", "-d", "/srv"],
        name="server",
        network={"mode": "bridge"},
        sandbox={"mounts": [{"source": str(www), "target": "/srv"}]},
    )
    srv = start(env, stack, server)
    ip = env.net.leases.get("server")
    url = f"http://{ip}:8080/hello.txt"
    assert wait_http(url, timeout=20) == b"hello over the bridge\n"  # host -> sandbox
    client = harness.unit(
        [PYTHON, "-c", HTTP_CLIENT, url], name="client", network={"mode": "bridge"}
    )
    cli = start(env, stack, client)
    assert cli.output() == "hello over the bridge\n"  # sandbox -> sandbox
    # The service crashes: the kernel frees its netns and the veth with it; detach is a no-op
    # or finishes the job; the lease stays for the restart.
    inode = os.stat(f"/proc/{srv.pid}/ns/net").st_ino
    srv.reap(signal.SIGKILL)
    asyncio.run(env.net.detach("server"))
    assert not has_link(env.net.veth_for("server"))
    assert wait_gone(lambda: _netns_in_use(inode))
    assert env.net.leases.get("server") == ip
    # The restart gets the same address and works again.
    start(env, stack, server)
    assert wait_http(url, timeout=20) == b"hello over the bridge\n"


def test_bridge_sandbox_side_seen_from_inside(env: Env, stack: contextlib.ExitStack) -> None:
    spec = harness.unit([PYTHON, "-c", NET_PROBE], name="inside", network={"mode": "bridge"})
    box = start(env, stack, spec)
    info = json.loads(box.output())
    assert info == {"interfaces": ["eth0", "lo"], "loopback": {"127.0.0.1": True, "::1": True}}


def test_network_failure_aborts_the_launch_cleanly(env: Env, stack: contextlib.ExitStack) -> None:
    spec = harness.unit(["/bin/sleep", "30"], name="orphaned", network={"mode": "bridge"})
    # The bridge vanishes between prepare and attach (an operator deleted it) ...
    real_prepare = env.net.prepare

    async def prepare_then_lose_bridge(*args: object) -> object:
        plan = await real_prepare(*args)  # type: ignore[arg-type]
        await env.net.remove_bridge()
        return plan

    env.net.prepare = prepare_then_lose_bridge  # type: ignore[method-assign,assignment]
    # ... so attach fails, start() aborts the launch, PID 1 exits without building anything.
    with pytest.raises(NetworkError, match="is gone"):
        start(env, stack, spec)
    assert not has_link(env.net.veth_for("orphaned"))
    # The restart rebuilds the bridge and gets the unit's address back.
    env.net.prepare = real_prepare  # type: ignore[method-assign]
    box = start(env, stack, spec)
    assert os.path.exists(f"/proc/{box.pid}")
    assert has_link(env.net.bridge) and has_link(env.net.veth_for("orphaned"))
