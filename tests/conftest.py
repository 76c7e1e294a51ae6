"""Settings shared by every test layer (keep this file small; layers have their own conftest).

Hypothesis profiles: "repeatable" (the default, what CI runs) is deterministic: derandomized,
so each test draws the same examples on every run, with no example database carried between
runs, and no per-example deadline (which flakes on busy 2-core runners without finding bugs).
A failure in CI is then a bug that reproduces, never a bad draw. HYPOTHESIS_PROFILE=fuzz is
the developers' deep run (scripts/fuzz.sh): random, many more examples, with the database to
replay what it found.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Iterator

import pytest
from hypothesis import settings

from supervisor.engine import logwriter, statewriter

# Not named "default": schemathesis applies only the settings that differ from Hypothesis' own
# "default" profile, so redefining that one would silently drop derandomize for the API fuzzer.
settings.register_profile("repeatable", deadline=None, derandomize=True, database=None)
settings.register_profile("fuzz", deadline=None, max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


# A runner that starts the tests as a background job of a shell without job control hands them
# SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the tests that stop a
# `sandboxctl ... -f` with SIGINT, or check what a launcher resets, would then test the runner.
# Every process the tests start gets SIGINT at its default again (a handler is reset at exec,
# an ignored signal is not).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


_PR_SET_CHILD_SUBREAPER, _PR_GET_CHILD_SUBREAPER = 36, 37


@contextlib.contextmanager
def _child_subreaper(on: bool) -> Iterator[None]:
    """The test process's PR_SET_CHILD_SUBREAPER set to `on`, and put back afterwards."""
    libc = ctypes.CDLL(None, use_errno=True)
    before = ctypes.c_int(0)
    libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(before), 0, 0, 0)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, before.value, 0, 0, 0)


@pytest.fixture
def not_a_subreaper() -> Iterator[None]:
    """The test process as an ordinary parent, for tests about what happens to orphans.

    Launcher tests make the pytest process a child subreaper (as the daemon is), and it stays
    so for the rest of the session. Then orphans a test expects init to reap (a killed daemon's
    sandboxes) become never-reaped zombies of pytest, and their exit status never shows up."""
    with _child_subreaper(False):
        yield


@pytest.fixture
def a_subreaper() -> Iterator[None]:
    """The test process as a child subreaper (as after a launcher test, or as the daemon is):
    orphans of its descendants become its children, and stay zombies until it reaps them."""
    with _child_subreaper(True):
        yield


@pytest.fixture(autouse=True)
def _no_writer_thread_left() -> Iterator[None]:
    """Tests that run Captures or save state records in this process start the daemon's log
    and state writer threads; they end with the test, because launcher tests fork this process
    directly, which launch.py (rightly) refuses while a second thread exists."""
    yield
    assert logwriter.WRITER.stop(timeout=60), "the log writer is still busy after the test"
    assert statewriter.WRITER.stop(timeout=60), "the state writer is still busy after the test"
