"""Fixtures for the security suite: real daemons from the reliability kit (tests/reliability)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
from kit import daemon_factory


@pytest.fixture
def sdaemons() -> Iterator[Callable[[], Any]]:
    """A factory of isolated, not yet started daemons; teardown checks for leftovers."""
    with daemon_factory("sec") as make:
        yield make
