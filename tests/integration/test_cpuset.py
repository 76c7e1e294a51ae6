"""CPU pinning on the real kernel: `cpus` seen from inside a sandbox, moved live, checked.

The sandbox reports its own Cpus_allowed_list (/proc/self/status) whenever it changes, so a
live update (`UnitCgroup.apply`, what a resource-only reload does) is observed from inside the
same process, without a restart. Needs two CPUs (this host and the VM have 0-1).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor.cgroups import Limits, cpuset
from supervisor.errors import CgroupError
from tests.support.cgroup_sandbox import SandboxEnv, python_unit, sandbox_env
from tests.support.requires import CGROUP_ROOT, requires_root

pytestmark = [
    pytest.mark.root,
    requires_root,
    pytest.mark.skipif(
        not {0, 1} <= cpuset.parse_list(Path(cpuset.ONLINE_CPUS).read_text()),
        reason="needs CPUs 0 and 1 online",
    ),
]
__all__ = ["sandbox_env"]  # the fixture, re-exported for pytest

WATCH = r"""
import time
last = None
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    with open("/proc/self/status") as f:
        now = [l.split(":")[1].strip() for l in f if l.startswith("Cpus_allowed_list")][0]
    if now != last:
        print(now, flush=True)
        last = now
    time.sleep(0.02)
"""


def test_sandbox_runs_on_its_cpus_and_moves_live(sandbox_env: SandboxEnv) -> None:
    env = sandbox_env
    spec = python_unit("pinned", WATCH, resources={"cpus": "1"})
    cg = env.manager.create("pinned", Limits.from_config(spec.unit.resources))
    box = env.start(cg, spec)
    assert box.line() == "1"
    assert env.read("pinned", "cpuset.cpus") == "1"

    cg.apply(Limits(cpus="0"))  # a resource-only reload: same process, other CPU
    assert box.line() == "0"
    cg.apply(Limits(cpus="0-1"))
    assert box.line() == "0-1"

    # CPUs that do not exist: a clear error, and the sandbox stays where it was.
    with pytest.raises(CgroupError) as info:
        cg.apply(Limits(cpus="1,7-9"))
    assert "CPUs 7-9 not online on this host (online: 0-1" in str(info.value)
    cg.apply(Limits(cpus="1"))
    assert box.line() == "1", "no change was applied in between"
    assert os.waitpid(box.pid, os.WNOHANG) == (0, 0), "never restarted"


def test_unset_cpus_is_every_cpu_of_the_parent_and_bad_cpus_refuse_create(
    sandbox_env: SandboxEnv,
) -> None:
    env = sandbox_env
    cg = env.manager.create("free", Limits())
    box = env.start(cg, python_unit("free", WATCH))
    assert cpuset.parse_list(box.line()) >= {0, 1}
    with pytest.raises(CgroupError, match=r"cpus '0-63': CPUs 2-63 not online"):
        env.manager.create("toomany", Limits(cpus="0-63"))
    assert env.manager.open("toomany") is None


@pytest.mark.cgroup_v1
def test_v1_parent_cpuset_initialised_before_units_join(sandbox_env: SandboxEnv) -> None:
    """A v1 cpuset starts empty and refuses tasks: the parent gets the root's sets."""
    env = sandbox_env
    if env.version != 1:
        pytest.skip("v1 only: a v2 cpuset inherits")
    parent = os.path.join(CGROUP_ROOT, "cpuset", env.parent)
    root = os.path.join(CGROUP_ROOT, "cpuset")
    for name in ("cpuset.cpus", "cpuset.mems"):
        assert Path(parent, name).read_text() == Path(root, name).read_text() != "\n"
