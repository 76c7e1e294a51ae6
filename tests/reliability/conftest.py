"""Fixtures for the reliability suite (real daemons; see kit.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.kit import daemon_factory


@pytest.fixture
def rdaemons() -> Iterator[Callable[[], Any]]:
    """A factory of isolated, not yet started daemons; teardown checks for leftovers."""
    with daemon_factory("rel") as make:
        yield make
