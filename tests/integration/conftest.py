"""Real-daemon fixtures (the daemons themselves live in daemon_kit.py).

Teardown stops each daemon (SIGTERM; SIGKILL only if it hangs, by its PID), then asserts that
nothing is left in its cgroup parent and removes that parent.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from tests.support.daemon_kit import Daemon, new_daemon, teardown


@pytest.fixture
def daemons() -> Iterator[Callable[[], Daemon]]:
    """A factory: each call gives a new isolated (not yet started) daemon."""
    made: list[Daemon] = []

    def make() -> Daemon:
        made.append(new_daemon())
        return made[-1]

    yield make
    problems = [p for d in made for p in teardown(d)]
    for d in made:
        shutil.rmtree(d.base, ignore_errors=True)
    assert not problems, problems


@pytest.fixture
def daemon(daemons: Callable[[], Daemon]) -> Daemon:
    return daemons()
