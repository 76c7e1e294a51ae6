"""The control bench's interpreter row: the floor of its sandboxctl rows, measured on the
interpreter the README's setup makes, and said when it is not."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.bench import bench_status


def test_sandboxctl_is_the_venvs_entry_script_on_the_benchs_interpreter() -> None:
    command = bench_status.client_command()
    assert command[0].endswith("/sandboxctl"), command  # not `python -m`: no runpy imports
    # The checkout's bytecode is written by scripts/bytecode.sh (the test command runs it), not
    # by a plain `pytest tests/unit`: whether it is there is the next test's concern.
    problems = bench_status.interpreter_problems()
    assert [p for p in problems if not p.startswith("no bytecode")] == []


def test_a_checkout_without_bytecode_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(importlib.util, "cache_from_source", lambda _: str(tmp_path / "none.pyc"))
    problems = bench_status.interpreter_problems()
    assert [p for p in problems if "bytecode.sh" in p] != []


def test_an_import_hook_at_every_start_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # What an old editable install puts on sys.meta_path at every interpreter start.
    finder = type("_EditableFinder", (), {"__module__": "__editable___sandboxd_0_1_0_finder"})
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, finder()])
    problems = [p for p in bench_status.interpreter_problems() if not p.startswith("no bytecode")]
    assert len(problems) == 1 and "editable" in problems[0] and "setup.sh" in problems[0]
