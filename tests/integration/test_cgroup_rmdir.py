"""cgroups/files.rmdir on the real kernel, as root: a cgroup whose killed tasks are still on
their way out is removed once the kernel says they have exited (their pidfds), with no sleep
between tries; one that waiting cannot empty fails at once, or at the timeout.

Each test makes its own cgroup `sandboxd-test-rmdir-<pid>-<n>`, in v1's pids hierarchy and in
the v2 hierarchy (the unified one of a hybrid host), moves only a child it started into it, and
removes both whatever happens. A spy on os.rmdir records what the kernel answered each try.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from itertools import count

import pytest

from supervisor.cgroups import files
from supervisor.errors import CgroupError
from tests.support.requires import CGROUP_ROOT, requires_root

pytestmark = [pytest.mark.root, requires_root]
_serial = count()
_on_busy: list[Callable[[], None]] = []  # what the spy runs at the first EBUSY

# Two threads blocked on stdin; the process exits when stdin closes.
CHILD = [sys.executable, "-c", "import os, threading\n"
         "threading.Thread(target=os.read, args=(0, 1), daemon=True).start()\n"
         "os.read(0, 1)\nos._exit(0)\n"]  # fmt: skip


def _hierarchies() -> list[str]:
    found = []
    for where in ("pids", "unified", ""):
        base = os.path.join(CGROUP_ROOT, where)
        if os.path.isfile(os.path.join(base, "cgroup.procs")) and os.path.ismount(base):
            found.append(base)
    return found[:2]  # pure v2: the root alone


@pytest.fixture(params=_hierarchies())
def cgroup(request: pytest.FixtureRequest) -> Iterator[str]:
    path = os.path.join(request.param, f"sandboxd-test-rmdir-{os.getpid()}-{next(_serial)}")
    os.mkdir(path)
    try:
        yield path
    finally:
        for sub in files.child_dirs(path):
            os.rmdir(os.path.join(path, sub))
        if os.path.isdir(path):
            os.rmdir(path)


@pytest.fixture
def tries(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The errno of each os.rmdir (0: removed); `_on_busy` runs at the first EBUSY."""
    seen: list[int] = []
    real = os.rmdir

    def spy(path: str) -> None:
        try:
            real(path)
        except OSError as err:
            seen.append(err.errno or -1)
            if err.errno == errno.EBUSY and seen.count(errno.EBUSY) == 1:
                for hook in _on_busy:
                    hook()
            raise
        seen.append(0)

    monkeypatch.setattr(os, "rmdir", spy)
    yield seen
    _on_busy.clear()


def _child_in(path: str) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(CHILD, stdin=subprocess.PIPE)
    try:
        files.write(os.path.join(path, "cgroup.procs"), child.pid)
    except BaseException:
        child.kill()
        child.wait()
        raise
    return child


def test_a_cgroup_is_removed_once_its_leaving_threads_have_exited(
    cgroup: str, tries: list[int]
) -> None:
    child = _child_in(cgroup)
    try:
        assert child.stdin is not None
        _on_busy.append(child.stdin.close)  # the first refusal lets the child exit
        files.rmdir(cgroup, timeout=60)
        # Refused while the child lived; the next try, after its threads' pidfds read, worked.
        assert tries == [errno.EBUSY, 0]
        assert not os.path.exists(cgroup)
        assert child.wait() == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_cgroup_with_a_child_cgroup_fails_at_once(cgroup: str, tries: list[int]) -> None:
    os.mkdir(os.path.join(cgroup, "sub"))
    with pytest.raises(CgroupError, match="Device or resource busy"):
        files.rmdir(cgroup, timeout=60)
    assert tries == [errno.EBUSY]  # nothing to wait for: not tried again


def test_a_task_that_stays_fails_at_the_timeout(cgroup: str, tries: list[int]) -> None:
    child = _child_in(cgroup)
    try:
        with pytest.raises(CgroupError, match="Device or resource busy"):
            files.rmdir(cgroup, timeout=0.05)
        assert tries == [errno.EBUSY]  # waited on its pidfds, not retried in a loop
    finally:
        child.kill()
        child.wait()
