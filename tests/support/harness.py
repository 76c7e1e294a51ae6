"""Host-side harness for launcher tests: throwaway v1 cgroups, launch-and-collect, cleanup.

Imported by tests/integration/test_launch*.py and test_escape*.py (and the benchmark). Every
helper cleans up after itself: it kills and reaps only the PIDs it launched and removes the
cgroups it created.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import itertools
import json
import os
import select
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from supervisor.errors import LaunchError
from supervisor.sandbox.host.forkserver import ForkServer
from supervisor.sandbox.host.launch import ExtraBind, LaunchRequest, launch
from supervisor.unit.schema import UnitFile
from supervisor.unit.spec import UnitSpec

PROBE_DIR = str(Path(__file__).resolve().parents[1] / "probe")  # tests/probe: probe.py
HOST_PYTHON = "/usr/bin/python3"
# The harness plays the daemon, which gives each unit with a user namespace (the default) a
# block of its userns_pool: this is the harness's block, just above the default pool, so a
# sandbox launched here never shares host ids with a test daemon's unit.
ID_MAP = (0, 0x70000000, 65536)
# Where launches keep their shared /etc snapshots, as a daemon does under its state dir
# (etcsnap.py); this process's own, removed at its exit.
ETC_DIR = f"/tmp/sandboxd-test-etc-{os.getpid()}"
atexit.register(shutil.rmtree, ETC_DIR, True)
V1_ROOT = "/sys/fs/cgroup"
_counter = itertools.count()


def set_subreaper() -> None:
    """What the daemon does at startup: orphaned sandbox PID 1s re-parent to us."""
    if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def v1_available() -> bool:
    return os.path.isdir(f"{V1_ROOT}/memory") and os.path.isdir(f"{V1_ROOT}/pids")


# The marks of a module whose tests launch sandboxes through this harness (its `pytestmark`):
# root, and the v1 memory+pids cgroups the harness puts each sandbox in.
LAUNCH_MARKS = [
    pytest.mark.root,
    pytest.mark.cgroup_v1,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, cgroups)"),
    pytest.mark.skipif(not v1_available(), reason="needs cgroup v1 memory+pids"),
]


@contextlib.contextmanager
def v1_cgroup(memory_max: int | None = None, pids_max: int | None = None) -> Iterator[list[str]]:
    """A throwaway memory+pids cgroup pair; yields their cgroup.procs paths."""
    name = f"sandboxd-launchtest-{os.getpid()}-{next(_counter)}"
    dirs = [f"{V1_ROOT}/memory/{name}", f"{V1_ROOT}/pids/{name}"]
    for d in dirs:
        os.mkdir(d)
    try:
        if memory_max is not None:
            Path(dirs[0], "memory.limit_in_bytes").write_text(str(memory_max))
        if pids_max is not None:
            Path(dirs[1], "pids.max").write_text(str(pids_max))
        yield [f"{d}/cgroup.procs" for d in dirs]
    finally:
        for d in dirs:
            _remove_cgroup(d)


def _remove_cgroup(path: str) -> None:
    for _ in range(200):
        pids = [int(p) for p in Path(path, "cgroup.procs").read_text().split()]
        for pid in pids:  # only our own sandbox's processes are in here
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            os.rmdir(path)
            return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"could not remove test cgroup {path}")


def unit(argv: list[str], name: str = "probe", **sections: dict[str, Any]) -> UnitSpec:
    data: dict[str, Any] = {"service": {"exec": argv}}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return UnitSpec(name, f"/test/{name}.toml", UnitFile.model_validate(data))


def id_map_for(spec: UnitSpec) -> tuple[int, int, int] | None:
    """The (0, host base, size) a launch of `spec` needs: ID_MAP for a unit with a user
    namespace, None without one."""
    return ID_MAP if "user" in spec.unit.sandbox.namespaces else None


def probe_unit(*args: str, name: str = "probe", **sections: dict[str, Any]) -> UnitSpec:
    """A unit running tests/probe/probe.py with the host's Python, the probe dir bound in."""
    sandbox = dict(sections.pop("sandbox", {}))
    mounts = [*sandbox.pop("mounts", []), {"source": PROBE_DIR, "target": "/probe"}]
    return unit(
        [HOST_PYTHON, "/probe/probe.py", *args],
        name=name,
        sandbox={**sandbox, "mounts": mounts},
        **sections,
    )


@dataclass
class Run:
    pid: int
    status: int
    stdout: bytes
    stderr: bytes

    @property
    def exit_code(self) -> int:
        return os.waitstatus_to_exitcode(self.status)

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except ValueError:
            raise AssertionError(
                f"probe printed no JSON; exit {self.exit_code}\nstdout: {self.stdout[:2000]!r}\n"
                f"stderr: {self.stderr.decode(errors='replace')[-4000:]}"
            ) from None


def _drain(fds: list[int], pid: int, deadline: float) -> dict[int, bytes]:
    out = {fd: b"" for fd in fds}
    open_fds = list(fds)
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            raise TimeoutError("sandbox did not finish in time")
        ready, _, _ = select.select(open_fds, [], [], left)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if chunk:
                out[fd] += chunk
            else:
                open_fds.remove(fd)
    return out


def run(
    spec: UnitSpec,
    *,
    cgroup: bool = True,
    timeout: float = 30.0,
    overlay_dir: str | None = None,
    extra_binds: list[ExtraBind] | None = None,
    extra_env: dict[str, str] | None = None,
    id_map: tuple[int, int, int] | None = None,
    etc_dir: str | None = ETC_DIR,
) -> Run:
    """Launch, Go, collect stdout/stderr until EOF, reap. LaunchError propagates (after reaping).
    `id_map`: a user namespace's (0, host base, size), as the daemon gives each unit its own
    (default: `id_map_for(spec)`)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    with contextlib.ExitStack() as stack:
        procs = stack.enter_context(v1_cgroup()) if cgroup else []
        try:
            launched = launch(
                LaunchRequest(
                    spec,
                    procs,
                    out_w,
                    err_w,
                    extra_env=extra_env or {},
                    extra_binds=extra_binds or [],
                    overlay_dir=overlay_dir,
                    id_map=id_map if id_map is not None else id_map_for(spec),
                    etc_dir=etc_dir,
                ),
                server=_fork_server,
            )
        finally:
            os.close(out_w)
            os.close(err_w)
        try:
            launched.go()
        except LaunchError:
            os.waitpid(launched.pid, 0)
            os.close(out_r)
            os.close(err_r)
            raise
        try:
            data = _drain([out_r, err_r], launched.pid, time.monotonic() + timeout)
        finally:
            os.close(out_r)
            os.close(err_r)
            _, status = os.waitpid(launched.pid, 0)
    return Run(launched.pid, status, data[out_r], data[err_r])


_fork_server: ForkServer | None = None


@contextlib.contextmanager
def through(server: ForkServer) -> Iterator[ForkServer]:
    """Inside the block, `launch` and `run` fork through `server` (the daemon's way)."""
    global _fork_server  # noqa: PLW0603  (test-side: one server per test module at a time)
    _fork_server = server
    try:
        yield server
    finally:
        _fork_server = None


def mountinfo() -> list[str]:
    """The host's mount table, without per-mount ids that legitimately differ."""
    with open("/proc/self/mountinfo") as f:
        return sorted(" ".join(line.split()[3:]) for line in f)


@pytest.fixture(scope="module", autouse=True, params=["direct", "forkserver"])
def launch_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test of a module that imports this runs twice: forked from the test process, and
    through a fork server (the daemon's way)."""
    if request.param == "direct":
        yield "direct"
        return
    server = ForkServer.start()
    try:
        with through(server):
            yield "forkserver"
    finally:
        server.close()
