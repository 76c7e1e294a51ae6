"""The control bench's interpreter row: the floor of its sandboxctl rows, measured on the
interpreter the README's setup makes, and said when it is not."""

from __future__ import annotations

import sys

import pytest

from tests.bench import bench_status


def test_sandboxctl_is_the_venvs_entry_script_on_the_benchs_interpreter() -> None:
    command = bench_status.client_command()
    assert command[0].endswith("/sandboxctl"), command  # not `python -m`: no runpy imports
    assert bench_status.interpreter_problems() == []


def test_an_import_hook_at_every_start_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # What an old editable install puts on sys.meta_path at every interpreter start.
    finder = type("_EditableFinder", (), {"__module__": "__editable___sandboxd_0_1_0_finder"})
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, finder()])
    problems = bench_status.interpreter_problems()
    assert len(problems) == 1 and "editable" in problems[0] and "setup.sh" in problems[0]
