"""Skip markers for integration tests: each test says what the host must offer, and skips with
the reason when it does not (as runc's `requires` in tests/integration/helpers.bash)."""

from __future__ import annotations

import os

import pytest

CGROUP_ROOT = "/sys/fs/cgroup"


def is_root() -> bool:
    return os.geteuid() == 0


def cgroup_version(root: str = CGROUP_ROOT) -> int:
    """2 on a pure cgroup v2 host, 1 on a v1 or hybrid one, 0 if no cgroupfs is mounted."""
    if os.path.isfile(os.path.join(root, "cgroup.controllers")):
        return 2
    if os.path.isfile(os.path.join(root, "memory", "cgroup.procs")):
        return 1
    return 0


requires_root = pytest.mark.skipif(not is_root(), reason="needs root")
requires_cgroup_v1 = pytest.mark.skipif(
    cgroup_version() != 1, reason="needs a cgroup v1/hybrid host (memory hierarchy mounted)"
)
requires_cgroup_v2 = pytest.mark.skipif(
    cgroup_version() != 2,
    reason="needs a pure cgroup v2 host: run scripts/test-v2.sh (../shared/vm/run)",
)
