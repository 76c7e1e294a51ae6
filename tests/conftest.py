"""Settings shared by every test layer (keep this file small; layers have their own conftest).

Hypothesis profiles: "default" drops the per-example deadline, which flakes on busy 2-core
runners without finding bugs; HYPOTHESIS_PROFILE=fuzz runs many more examples for a deep run.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

settings.register_profile("default", deadline=None)
settings.register_profile("fuzz", deadline=None, max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


_PR_SET_CHILD_SUBREAPER, _PR_GET_CHILD_SUBREAPER = 36, 37


@pytest.fixture
def not_a_subreaper() -> Iterator[None]:
    """The test process as an ordinary parent, for tests about what happens to orphans.

    Launcher tests make the pytest process a child subreaper (as the daemon is), and it stays
    so for the rest of the session. Then orphans a test expects init to reap (a killed daemon's
    sandboxes) become never-reaped zombies of pytest, and their exit status never shows up."""
    libc = ctypes.CDLL(None, use_errno=True)
    before = ctypes.c_int(0)
    libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(before), 0, 0, 0)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    yield
    libc.prctl(_PR_SET_CHILD_SUBREAPER, before.value, 0, 0, 0)
