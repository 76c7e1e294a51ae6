"""The restart bench's pure parts (tests/bench/bench_oom_restart.py): which kill or crash a
traced restart belongs to, and the hop-by-hop breakdown."""

from __future__ import annotations

from tests.bench.bench_oom_restart import KILL, breakdown, p95, with_cause


def test_each_trace_gets_the_latest_cause_before_it() -> None:
    traces = [[("exit", 110.0), ("exec", 130.0)], [("exit", 210.0), ("exec", 235.0)]]
    causes = [100.0, 105.0, 200.0]  # 105 is the kill of the run whose exit came at 110
    assert with_cause(traces, causes, KILL) == [
        [(KILL, 105.0), ("exit", 110.0), ("exec", 130.0)],
        [(KILL, 200.0), ("exit", 210.0), ("exec", 235.0)],
    ]


def test_a_trace_without_a_cause_read_by_the_bench_is_left_out() -> None:
    traces = [[("exit", 50.0)], [("exit", 3000.0)], [("exit", 110.0)]]
    # Nothing before 50; the cause before 3000 is seconds older: not this restart's.
    assert with_cause(traces, [100.0], KILL) == [[(KILL, 100.0), ("exit", 110.0)]]


def test_the_breakdown_orders_stages_by_their_median_time() -> None:
    traces = [
        [("kill", 0.0), ("launch", 5.0), ("exit", 2.0)],
        [("kill", 10.0), ("exit", 14.0), ("launch", 17.0)],
    ]
    title, header, *rows = breakdown(traces, "restarts")
    assert title == "restarts, 2 traced restarts (ms; median / p95)" and "stage" in header
    assert [row.split()[0] for row in rows] == ["kill", "exit", "launch"]
    exit_row = rows[1].split()
    # since the kill: 2 and 4 (median 3); since the stage before (the kill): the same
    assert exit_row[1:] == ["3.00", "/", "2.00", "3.00", "/", "2.00"]


def test_a_stage_some_restarts_lack_says_in_how_many() -> None:
    rows = breakdown([[("a", 0.0), ("b", 1.0)], [("a", 0.0)]], "t")[2:]
    assert rows[1].endswith("(in 1)") and not rows[0].endswith(")")


def test_no_traces_is_said() -> None:
    assert breakdown([], "OOM") == ["OOM: no traced restarts"]


def test_p95_of_twenty_is_the_nineteenth() -> None:
    assert p95([float(x) for x in range(1, 21)]) == 19.0
