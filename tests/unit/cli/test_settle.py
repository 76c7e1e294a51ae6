"""How `sandboxctl reload` reads the outcome of what it started from events (pure)."""

from __future__ import annotations

from typing import Any

from supervisor.cli.settle import outcome, settle


def ev(seq: int, unit: str, event: str, state: str, **detail: Any) -> dict[str, Any]:
    return {"seq": seq, "unit": unit, "event": event, "state": state, "detail": detail}


def test_one_event_settles_a_unit() -> None:
    table = [
        (ev(1, "a", "started", "running"), ("running", True, "running")),
        (ev(1, "a", "ready", "running"), ("running", True, "running (ready)")),
        (ev(1, "a", "failed", "failed", reason="launch-error:exec: no such file"),
         ("failed", False, "failed: launch-error:exec: no such file")),
        (ev(1, "a", "backoff", "backoff", reason="exit-code:1", delay=0.2),
         ("backoff", False, "backoff: restarting in 0.2s after exit-code:1")),
        (ev(1, "a", "backoff", "backoff", reason="exit-code:0", delay=1.0),
         ("backoff", True, "backoff: restarting in 1s after exit-code:0")),
        (ev(1, "a", "exited", "exited", reason="exit-code:0"),
         ("exited", True, "exited: exit-code:0")),
        (ev(1, "a", "exited", "exited", reason="signal:SIGSEGV"),
         ("exited", False, "exited: signal:SIGSEGV")),
        (ev(1, "a", "removed", "stopped"), ("removed", True, "removed")),
    ]  # fmt: skip
    for event, expected in table:
        found = outcome(event)
        assert found is not None and (found.state, found.ok, found.text) == expected, event
    for pending in (
        ev(1, "a", "started", "starting"),  # ready = "notify", not ready yet
        ev(1, "a", "exited", "backoff", reason="exit-code:1"),  # the backoff event follows
        ev(1, "a", "exited", "stopped"),  # a restart's old run
        ev(1, "a", "stopped", "stopped"),
        ev(1, "a", "waiting", "starting", reason="waiting for db"),
        ev(1, "a", "health", "running", health="healthy"),  # an old run's probe verdict
    ):
        assert outcome(pending) is None, pending


def test_events_before_the_cut_and_of_other_units_do_not_count() -> None:
    events = [
        ev(4, "a", "backoff", "backoff", reason="exit-code:1"),  # before the reload acted
        ev(5, "a", "stopped", "stopped"),
        ev(6, "other", "failed", "failed"),
        ev(7, "a", "started", "running"),
    ]
    (result,) = settle(events, ["a"], after=5, timeout=10).values()
    assert (result.state, result.ok, result.event) == ("running", True, events[-1])


def test_a_unit_that_never_settles_is_reported_with_what_it_last_did() -> None:
    events = [ev(2, "a", "waiting", "starting", reason="waiting for db (stopped)")]
    found = settle(events, ["a", "b"], after=1, timeout=5)
    assert found["a"].text == (
        "not settled within 5s (starting after waiting: waiting for db (stopped))"
    )
    assert found["b"].text == "not settled within 5s" and not found["b"].ok


def test_after_a_gap_the_status_settles_what_it_can() -> None:
    looked: list[int] = []

    def lookup() -> list[dict[str, Any]]:
        looked.append(1)
        return [
            {"name": "a", "state": "running"},
            {"name": "b", "state": "failed", "error": "start limit hit"},
            {"name": "c", "state": "starting"},
            {"name": "zz", "state": "failed"},
        ]

    events = [ev(3, "a", "stopping", "stopping"), ev(9, "c", "started", "running")]
    found = settle(events, ["a", "b", "c"], after=2, timeout=5, lookup=lookup)
    assert looked == [1]  # once, at the gap between 3 and 9
    assert (found["a"].state, found["a"].ok) == ("running", True)
    assert found["a"].text == "running (from status: events were lost)"
    assert (found["b"].state, found["b"].ok) == ("failed", False)
    assert found["c"].text == "running"  # still pending at the gap: its event settles it
