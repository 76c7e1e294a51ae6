"""Real sandboxes in real unit cgroups, for the device and cpuset tests (v1 here, v2 in the VM).

`sandbox_env` gives a Manager on its own parent `sandboxd-test-dc-<pid>-<n>`; sandboxes are
launched through `supervisor.sandbox.host.launch` into a unit cgroup made by that manager,
exactly as the daemon does. Teardown kills and reaps only the PIDs launched here, destroys
every unit cgroup of the parent (which detaches v2 device filters) and removes the parent.
"""

from __future__ import annotations

import contextlib
import glob
import os
import select
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from supervisor import cgroups
from supervisor.cgroups import UnitCgroup
from supervisor.errors import LaunchError
from supervisor.sandbox.host.launch import LaunchRequest, launch
from supervisor.unit.spec import UnitSpec
from tests.support import harness
from tests.support.requires import CGROUP_ROOT, requires_cgroup_v1, requires_cgroup_v2

_serial = count()


@dataclass
class Sandbox:
    pid: int
    out: int  # read end of the sandbox's stdout+stderr
    buffer: bytes = b""

    def line(self, timeout: float = 60.0) -> str:
        """The next line the sandbox prints (AssertionError on EOF or timeout)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"no line from the sandbox in {timeout}s: {self.buffer!r}"
            ready, _, _ = select.select([self.out], [], [], left)
            if ready:
                chunk = os.read(self.out, 65536)
                assert chunk, f"sandbox closed its output: {self.buffer!r}"
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


@dataclass
class SandboxEnv:
    manager: cgroups.Manager
    parent: str
    version: int
    sandboxes: list[Sandbox] = field(default_factory=list)

    def start(self, cg: UnitCgroup, spec: UnitSpec) -> Sandbox:
        r, w = os.pipe()
        try:
            launched = launch(
                LaunchRequest(
                    spec, cg.procs_files(), w, w, timeout=120.0, id_map=harness.id_map_for(spec)
                )
            )
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        box = Sandbox(launched.pid, r)
        self.sandboxes.append(box)
        try:
            launched.go()
        except LaunchError:
            self.reap(box)
            raise
        return box

    def reap(self, box: Sandbox) -> int:
        """Kill (if still running) and reap a sandbox launched here; its wait status."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(box.pid, signal.SIGKILL)
        _, status = os.waitpid(box.pid, 0)
        os.close(box.out)
        self.sandboxes.remove(box)
        return status

    def run(self, cg: UnitCgroup, spec: UnitSpec, timeout: float = 120.0) -> str:
        """Launch, return the first line printed, reap."""
        box = self.start(cg, spec)
        try:
            return box.line(timeout)
        finally:
            self.reap(box)

    def file(self, unit: str, name: str) -> str:
        if self.version == 2:
            return os.path.join(CGROUP_ROOT, self.parent, unit, name)
        return os.path.join(CGROUP_ROOT, name.split(".", 1)[0], self.parent, unit, name)

    def read(self, unit: str, name: str) -> str:
        return Path(self.file(unit, name)).read_text().strip()


def python_unit(name: str, script: str, **sections: dict[str, Any]) -> UnitSpec:
    """A unit running `script` with the host's Python."""
    return harness.unit([harness.HOST_PYTHON, "-c", script], name=name, **sections)


@pytest.fixture(
    params=[
        pytest.param(1, marks=[pytest.mark.cgroup_v1, requires_cgroup_v1], id="v1"),
        pytest.param(2, marks=[pytest.mark.cgroup_v2, requires_cgroup_v2], id="v2"),
    ]
)
def sandbox_env(request: pytest.FixtureRequest) -> Iterator[SandboxEnv]:
    harness.set_subreaper()
    parent = f"sandboxd-test-dc-{os.getpid()}-{next(_serial)}"
    manager = cgroups.new(parent)
    assert manager.version == request.param
    env = SandboxEnv(manager, parent, request.param)
    try:
        yield env
    finally:
        for box in list(env.sandboxes):
            env.reap(box)
        for unit in manager.list_units():
            cg = manager.open(unit)
            if cg is not None:
                cg.destroy()
        for d in glob.glob(os.path.join(CGROUP_ROOT, parent)) + glob.glob(
            os.path.join(CGROUP_ROOT, "*", parent)
        ):
            if not os.path.islink(os.path.dirname(d)):  # co-mounted cpu -> cpu,cpuacct
                os.rmdir(d)
    assert not glob.glob(os.path.join(CGROUP_ROOT, "*", parent))
