"""`sandboxctl events`: recent history by default, aligned columns (the in-process server over
the fake controller, with the daemon's event memory)."""

from __future__ import annotations

import datetime as dt
import json

from cli_helpers import sandboxctl

from supervisor.api.testing import FakeController, ServerThread
from supervisor.cli.commands.events import Columns, when
from supervisor.engine.model import UnitEvent
from tests.support.waiting import wait_for

AT = dt.datetime(2026, 12, 6, 14, 50, 56, 123456, tzinfo=dt.UTC)


def _publish(daemon: ServerThread, controller: FakeController, count: int) -> None:
    async def publish() -> None:
        for i in range(count):
            unit = "web" if i % 2 else "db"
            controller.publish(UnitEvent(unit, "started", AT, "running", {"n": i}))

    daemon.call(publish())
    assert daemon.event_log is not None
    log = daemon.event_log
    wait_for(lambda: log.newest == count)


def test_recent_history_by_default(daemon: ServerThread, controller: FakeController) -> None:
    _publish(daemon, controller, 14)
    result = sandboxctl("events", "--no-follow")
    assert result.code == 0, result
    header, *lines = result.out.splitlines()
    assert header.split() == ["SEQ", "TIME", "UNIT", "EVENT", "STATE", "DETAIL"]
    assert [int(line.split()[0]) for line in lines] == list(range(5, 15))  # the last 10
    assert sandboxctl("events", "--no-follow", "--replay", "0").out == ""
    assert len(sandboxctl("events", "--no-follow", "--replay", "12").out.splitlines()) == 13
    web = sandboxctl("events", "web", "--no-follow", "--since", "10").out.splitlines()
    assert [line.split()[2] for line in web[1:]] == ["web", "web"]
    as_json = sandboxctl("events", "--no-follow", "--json").out.splitlines()
    assert [json.loads(line)["seq"] for line in as_json] == list(range(5, 15))


def test_columns_line_up_under_the_header(daemon: ServerThread, controller: FakeController) -> None:
    _publish(daemon, controller, 3)
    header, *lines = sandboxctl("events", "--no-follow").out.splitlines()
    starts = [header.index(name) for name in ("TIME", "UNIT", "EVENT", "STATE", "DETAIL")]
    for line in lines:
        assert line[starts[0] :].startswith("2026-12-06T14:50:56.123Z  ")
        assert line[starts[1] :].split()[0] in ("web", "db")
        assert line[starts[2] :].startswith("started ")
        assert line[starts[3] :].startswith("running ")
        assert line[starts[4] :].startswith("n=")
        assert header.index("SEQ") + len("SEQ") == len(line.split("  2026")[0])  # right-aligned


def test_a_longer_value_widens_its_column_from_then_on() -> None:
    columns = Columns()
    header = columns.header()
    event = {"seq": 1, "at": AT.isoformat(), "unit": "web", "event": "start_timeout_extended",
             "state": "starting", "detail": {"by": 5.0}}  # fmt: skip
    first = columns.line(event)
    second = columns.line({**event, "event": "ready", "state": "running", "detail": {}})
    assert first.index("starting") == second.index("running") > header.index("STATE")
    assert when("2026-12-06T15:50:56+01:00") == "2026-12-06T14:50:56.000Z"
    assert when("not a time") == "not a time"
