"""The runner's transition table (engine/transitions.py), over every legal combination.

`decide` is pure, so the whole space is walked: 8 states x 4 pending commands x 4 ways of
leaving x 10 booleans. The rows below are the table's promises; the checks over the whole
space are the properties the runner relies on.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Iterator

import pytest

from supervisor.contract import State
from supervisor.engine.transitions import Facts, Leaving, Pending, Step, decide

FLAGS = [f.name for f in dataclasses.fields(Facts) if f.type == "bool"]


def every_legal() -> Iterator[Facts]:
    for state, pending, leaving, *flags in itertools.product(
        State, Pending, Leaving, *([False, True] for _ in FLAGS)
    ):
        facts = Facts(state, pending, leaving, **dict(zip(FLAGS, flags, strict=True)))
        if facts.is_legal():
            yield facts


ALL = list(every_legal())


def test_the_space_is_what_the_docstring_says() -> None:
    assert FLAGS == [
        "has_spec", "launched", "ended", "ready", "overdue", "unhealthy", "pressured",
        "new_oom_kills", "self_stopping", "blocked", "backoff_over",
    ]  # fmt: skip
    assert 20_000 < len(ALL) < 8 * 4 * 4 * 2**11


def test_every_step_is_reachable_and_every_legal_case_has_one() -> None:
    steps = Counter(decide(f) for f in ALL)
    assert set(steps) == set(Step)


@pytest.mark.parametrize("facts", ALL[:: max(1, len(ALL) // 64)], ids=str)
def test_decide_is_deterministic(facts: Facts) -> None:
    assert decide(facts) is decide(dataclasses.replace(facts))


def base(state: State, **kw: object) -> Facts:
    values: dict[str, object] = {
        "pending": Pending.NONE, "leaving": Leaving.STAYING, "has_spec": True,
        "launched": state.has_process(),
    }  # fmt: skip
    return Facts(state, **{**values, **kw})  # type: ignore[arg-type]


# The table's rows, one case each (first match wins within a state).
ROWS = [
    (base(State.STOPPED, leaving=Leaving.FORGOTTEN, pending=Pending.START), Step.FINISH),
    (base(State.FAILED, pending=Pending.START), Step.BEGIN_START),
    (base(State.INVALID, has_spec=False, pending=Pending.START), Step.IDLE),
    (base(State.EXITED, pending=Pending.STOP), Step.IDLE),
    (base(State.STARTING, launched=False, pending=Pending.STOP, blocked=True), Step.ABORT_START),
    (base(State.STARTING, launched=False, leaving=Leaving.DETACHED), Step.ABORT_START),
    (base(State.STARTING, launched=False, blocked=True), Step.WAIT_FOR_DEPS),
    (base(State.STARTING, launched=False), Step.LAUNCH),
    (base(State.STARTING, ended=True, pending=Pending.STOP), Step.ENDED),
    (base(State.STARTING, pending=Pending.STOP, ready=True), Step.STOP),
    (base(State.STARTING, leaving=Leaving.DETACHED), Step.DETACH),
    (base(State.STARTING, ready=True, overdue=True), Step.READY),
    (base(State.STARTING, overdue=True), Step.END_FOR_REASON),
    (base(State.STARTING), Step.WAIT),
    (base(State.RUNNING, leaving=Leaving.DETACHED, ended=True), Step.DETACH),
    (base(State.RUNNING, ended=True, new_oom_kills=True), Step.ENDED),
    (base(State.RUNNING, new_oom_kills=True, pending=Pending.STOP), Step.OOM),
    (base(State.RUNNING, pending=Pending.RESTART, self_stopping=True), Step.STOP),
    (base(State.RUNNING, self_stopping=True, unhealthy=True), Step.SELF_STOP),
    (base(State.RUNNING, unhealthy=True), Step.END_FOR_REASON),
    (base(State.RUNNING, pressured=True), Step.END_FOR_REASON),
    (base(State.RUNNING, pressured=True, new_oom_kills=True), Step.OOM),
    (base(State.RUNNING, pressured=True, pending=Pending.STOP), Step.STOP),
    (base(State.RUNNING, ready=True), Step.WAIT),
    (base(State.STOPPING, ended=True, pending=Pending.START), Step.STOP_RUN),
    (base(State.BACKOFF, leaving=Leaving.REMOVED, pending=Pending.START), Step.CANCEL_RESTART),
    (base(State.BACKOFF, leaving=Leaving.DETACHED, backoff_over=True), Step.LEAVE_BACKOFF),
    (base(State.BACKOFF, pending=Pending.START), Step.RESTART),
    (base(State.BACKOFF, backoff_over=True), Step.RESTART),
    (base(State.BACKOFF), Step.WAIT),
]


@pytest.mark.parametrize(("facts", "step"), ROWS, ids=lambda x: str(getattr(x, "value", "")))
def test_table_rows(facts: Facts, step: Step) -> None:
    assert facts.is_legal()
    assert decide(facts) is step


def test_a_detaching_runner_never_signals_the_service() -> None:
    """on_exit = "leave": a running service is left as it is, whatever else is pending."""
    for f in ALL:
        if f.leaving is Leaving.DETACHED and f.state in (State.RUNNING, State.STARTING):
            assert decide(f) in (Step.DETACH, Step.ENDED, Step.ABORT_START), f


def test_only_an_unlaunched_start_launches() -> None:
    for f in ALL:
        if decide(f) is Step.LAUNCH:
            assert f.state is State.STARTING and not f.launched and not f.blocked
            assert not f.pending.stop and f.leaving is Leaving.STAYING and f.has_spec


def test_an_ended_run_is_handled_before_any_other_signal() -> None:
    """PID 1's exit is never masked by a command, an OOM kill or a deadline (but a detach,
    which leaves the ended run's status to the next daemon, and a stop already under way)."""
    for f in ALL:
        if f.launched and f.ended and f.state in (State.STARTING, State.RUNNING):
            assert decide(f) in (Step.ENDED, Step.DETACH), f


def test_the_task_only_finishes_with_nothing_running() -> None:
    for f in ALL:
        if decide(f) is Step.FINISH:
            assert f.state.is_settled() and not f.launched and f.leaving is not Leaving.STAYING


def test_a_removed_unit_never_starts_again() -> None:
    for f in ALL:
        if f.leaving.removing:
            assert decide(f) not in (
                Step.BEGIN_START,
                Step.LAUNCH,
                Step.RESTART,
                Step.WAIT_FOR_DEPS,
            ), f


@pytest.mark.parametrize("pending", list(Pending))
def test_pending_halves(pending: Pending) -> None:
    assert pending.without_start().start is False
    assert pending.without_stop().stop is False
    assert pending.without_start().stop is pending.stop
    assert pending.without_stop().start is pending.start
