"""The log-reader threads: results and errors reach the caller, at most `workers` threads run,
and they end when idle (so a daemon asked for logs once does not keep them)."""

from __future__ import annotations

import threading

import pytest

from supervisor.api import logreaders
from supervisor.api.logreaders import LogReaders
from tests.support.waiting import wait_for


def test_results_errors_and_a_bounded_number_of_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logreaders, "IDLE_SECONDS", 0.2)
    readers = LogReaders(workers=2)
    gate = threading.Event()
    held = [readers.submit(gate.wait, 30) for _ in range(3)]  # two run, one waits its turn
    wait_for(lambda: sum(f.running() for f in held) == 2, 10)
    assert not held[2].running() and len(readers._threads) == 2
    gate.set()
    assert [f.result(10) for f in held] == [True, True, True]
    with pytest.raises(ZeroDivisionError):
        readers.submit(lambda: 1 // 0).result(10)
    wait_for(lambda: not readers._threads, 10)  # idle: ended
    assert readers.submit(int, "7").result(10) == 7  # and started again when needed
