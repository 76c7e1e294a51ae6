"""Fixtures for the security suite: real daemons from the reliability kit (tests/reliability)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kit import daemon_factory


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is marked `security` (the attack suite, run in the host layer). The files
    whose defence is a cgroup (the bombs, the escape battery's device nodes) are also marked
    `cgroup_v2`, so the cgroup v2 VM runs them again (scripts/test-v2.sh says why the others are
    left to the host)."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.security)


@pytest.fixture
def sdaemons() -> Iterator[Callable[[], Any]]:
    """A factory of isolated, not yet started daemons; teardown checks for leftovers."""
    with daemon_factory("sec") as make:
        yield make
