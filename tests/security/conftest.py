"""Fixtures for the security suite: real daemons from the reliability kit (tests/reliability)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kit import daemon_factory


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is also one of the cgroup v2 VM's (scripts/test-v2.sh: `-m security`):
    an attack must fail on both kinds of hosts."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.security)


@pytest.fixture
def sdaemons() -> Iterator[Callable[[], Any]]:
    """A factory of isolated, not yet started daemons; teardown checks for leftovers."""
    with daemon_factory("sec") as make:
        yield make
