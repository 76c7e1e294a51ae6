"""Helpers for the API/CLI integration tests that must not come from `conftest`: a test module
importing `conftest` gets whichever conftest pytest loaded last when several test directories
are named on the command line."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s"
        time.sleep(0.05)
