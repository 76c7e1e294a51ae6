"""The restart arithmetic, replayed on a fake clock."""

from __future__ import annotations

import pytest

from supervisor.engine.backoff import Backoff, is_failure
from supervisor.unit.schema import Restart


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**policy: object) -> tuple[Backoff, FakeClock]:
    clock = FakeClock()
    return Backoff(Restart.model_validate(policy), clock=clock), clock


@pytest.mark.parametrize(
    ("policy", "reason", "verdict"),
    [
        ("no", "exit-code:1", "done"),
        ("no", "signal:SIGKILL", "done"),
        ("on-failure", "exit-code:0", "done"),
        ("on-failure", "exit-code:3", "restart"),
        ("on-failure", "signal:SIGSEGV", "restart"),
        ("on-failure", "oom-killed", "restart"),
        ("on-failure", "lost", "restart"),
        ("always", "exit-code:0", "restart"),
        ("always", "exit-code:1", "restart"),
    ],
)
def test_policy_table(policy: str, reason: str, verdict: str) -> None:
    backoff, _ = make(policy=policy)
    backoff.record_start()
    assert backoff.on_exit(reason, ran_for=1.0).verdict == verdict


def test_is_failure() -> None:
    assert not is_failure("exit-code:0")
    assert is_failure("exit-code:0x")
    assert is_failure("launch-error:exec: ENOENT")


def test_delay_doubles_up_to_max() -> None:
    backoff, clock = make(delay="100ms", max_delay="1s", burst=100, interval="1s")
    delays = []
    for _ in range(7):
        backoff.record_start()
        decision = backoff.on_exit("exit-code:1", ran_for=0.01)
        delays.append(decision.delay)
        clock.now += 10  # far apart: the burst window never fills
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


def test_long_run_resets_doubling() -> None:
    backoff, clock = make(delay="1s", max_delay="1m", reset_after="10s", burst=100)
    for expected in (1.0, 2.0, 4.0):
        backoff.record_start()
        assert backoff.on_exit("exit-code:1", ran_for=1).delay == expected
        clock.now += 100
    backoff.record_start()
    assert backoff.on_exit("exit-code:1", ran_for=10.0).delay == 1.0
    backoff.record_start()
    assert backoff.on_exit("exit-code:1", ran_for=9.9).delay == 2.0


@pytest.mark.parametrize(
    ("burst", "interval", "gap", "runs_before_give_up"),
    [
        (1, 60, 1.0, 1),  # the second start within a minute is one too many
        (3, 60, 1.0, 3),
        (3, 60, 30.0, None),  # 30s apart: at most 2 starts in any 60s window
        (5, 10, 0.0, 5),
    ],
)
def test_burst_table(
    burst: int, interval: int, gap: float, runs_before_give_up: int | None
) -> None:
    backoff, clock = make(delay="100ms", max_delay="100ms", burst=burst, interval=f"{interval}s")
    for run in range(1, 20):
        backoff.record_start()
        clock.now += gap
        decision = backoff.on_exit("exit-code:1", ran_for=gap)
        if decision.verdict == "give-up":
            assert run == runs_before_give_up
            assert "start limit" in decision.why
            return
        assert decision.verdict == "restart"
        clock.now += decision.delay
    assert runs_before_give_up is None


def test_burst_counts_the_planned_start_time() -> None:
    # Two starts 50s apart with interval 60s; the next would be at +55s + a 10s delay = 65s,
    # by which time the first start has left the window.
    backoff, clock = make(delay="10s", max_delay="10s", burst=2, interval="60s")
    backoff.record_start()
    clock.now += 50
    backoff.record_start()
    clock.now += 5
    decision = backoff.on_exit("exit-code:1", ran_for=5)
    assert decision.verdict == "restart"


def test_reset_forgets_failures() -> None:
    backoff, _ = make(delay="1s", max_delay="1m", burst=1)
    backoff.record_start()
    assert backoff.on_exit("exit-code:1", ran_for=0).verdict == "give-up"
    backoff.reset()
    backoff.record_start()
    decision = backoff.on_exit("exit-code:1", ran_for=0)
    assert decision.verdict == "give-up"  # burst=1: a single start is the limit again
    backoff.reset()
    assert backoff.next_delay() == 1.0
