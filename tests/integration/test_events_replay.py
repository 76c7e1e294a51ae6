"""The event stream's replay against a real daemon: numbered events, `?replay=N`, `?since=SEQ`
with no gap or repeat before the live part, the start-up's events, and a new daemon's epoch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.support.daemon_kit import Daemon, UnixHTTPConnection
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root, pytest.mark.usefixtures("not_a_subreaper")]

WEB = """
[service]
exec = ["/bin/sh", "-c", 'trap "exit 0" TERM; while :; do sleep 1 & wait $!; done']
stop_timeout = "2s"
"""


class Stream:
    """GET /v1/events?QUERY, read line by line."""

    def __init__(self, d: Daemon, query: str) -> None:
        self.conn = UnixHTTPConnection(d.socket, timeout=60)
        self.conn.request("GET", f"/v1/events?{query}")
        self.response = self.conn.getresponse()
        self._buffer = b""

    def header(self, name: str) -> str:
        return self.response.getheader(name) or ""

    def next(self) -> dict[str, Any] | None:
        while b"\n" not in self._buffer:
            chunk = self.response.read1(4096)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        event: dict[str, Any] = json.loads(line)
        return event

    def until(self, done: Any, timeout: float = 60) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not seen or not done(seen[-1]):
            assert time.monotonic() < deadline, seen
            event = self.next()
            assert event is not None, seen
            seen.append(event)
        return seen

    def rest(self) -> list[dict[str, Any]]:
        seen = []
        while (event := self.next()) is not None:
            seen.append(event)
        return seen

    def close(self) -> None:
        self.conn.close()


def kept(d: Daemon, query: str) -> tuple[list[dict[str, Any]], Stream]:
    stream = Stream(d, f"{query}&follow=0")
    assert stream.response.status == 200, stream.response.read()
    events = stream.rest()
    stream.close()
    return events, stream


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events]


def contiguous(numbers: list[int]) -> bool:
    return numbers == list(range(numbers[0], numbers[0] + len(numbers)))


@pytest.fixture
def running(daemon: Daemon) -> Daemon:
    daemon.write_unit("web", WEB)
    daemon.write_unit("db", WEB)
    daemon.start()
    for name in ("web", "db"):
        daemon.wait_unit(name, lambda u: u["state"] == "running")
    return daemon


def test_replay_includes_the_start_up(running: Daemon) -> None:
    events, stream = kept(running, "replay=1000")
    # Before the API was up: the first reconcile started both units; numbered from 1.
    assert seqs(events) == list(range(1, len(events) + 1))
    assert {("web", "started"), ("db", "started")} <= {(e["unit"], e["event"]) for e in events}
    assert int(stream.header("X-Event-Seq")) == events[-1]["seq"]
    assert stream.header("X-Event-Epoch")
    last_two, _ = kept(running, "replay=2")
    assert last_two == events[-2:]
    web, _ = kept(running, "replay=1000&unit=web")
    assert web == [e for e in events if e["unit"] == "web"]
    assert kept(running, "replay=0")[0] == []


def test_since_then_live_without_gap_or_repeat(running: Daemon) -> None:
    events, _ = kept(running, "replay=1000")
    mark = events[-1]["seq"]
    # Events while nobody listens: they are kept ...
    assert running.request("POST", "/v1/units/web/restart")[0] == 200
    stream = Stream(running, f"since={mark}")
    try:
        # ... and more once the stream is open: they come live, right after the kept ones.
        assert running.request("POST", "/v1/units/db/restart")[0] == 200
        seen = stream.until(lambda e: (e["unit"], e["event"]) == ("db", "started"))
    finally:
        stream.close()
    assert seqs(seen)[0] == mark + 1 and contiguous(seqs(seen)), seqs(seen)
    names = [(e["unit"], e["event"]) for e in seen]
    assert names.index(("web", "started")) < names.index(("db", "stopping")), names
    # The same since again, without follow: what is kept now, the same events.
    again, _ = kept(running, f"since={mark}")
    assert again[: len(seen)] == seen


def test_bad_parameters(running: Daemon) -> None:
    for query, code in (
        ("since=1&replay=1", 400), ("replay=1001", 400), ("since=-1", 400),
        ("follow=2", 400), ("replay=x", 400), ("unit=ghost", 404),
    ):  # fmt: skip
        stream = Stream(running, query)
        try:
            assert stream.response.status == code, query
            body = json.loads(stream.response.read())
            assert body["code"] in ("bad-request", "no-such-unit") and body["error"], body
        finally:
            stream.close()


def test_a_new_daemon_numbers_again(running: Daemon) -> None:
    events, stream = kept(running, "replay=1000")
    epoch = stream.header("X-Event-Epoch")
    running.wait_recorded()
    running.kill9()  # the services keep running; the next daemon re-adopts them
    running.start()
    for name in ("web", "db"):
        running.wait_unit(name, lambda u: u["state"] == "running")
    # A since from the old daemon, beyond anything the new one numbered: all it keeps,
    # which starts with the units' recent events, the re-adoption included.
    fresh, stream = kept(running, f"since={events[-1]['seq'] + 1000}")
    assert stream.header("X-Event-Epoch") != epoch
    assert seqs(fresh) == list(range(1, len(fresh) + 1))
    assert {("web", "adopted"), ("db", "adopted")} <= {(e["unit"], e["event"]) for e in fresh}


def test_sandboxctl_events(running: Daemon) -> None:
    env = {**os.environ, "SANDBOXD_SOCKET": str(running.socket)}

    def ctl(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "supervisor.cli.main", "events", *argv],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    events, _ = kept(running, "replay=1000&unit=web")
    out = ctl("web", "--replay", "1000", "--no-follow")
    assert out.returncode == 0, out.stderr
    header, *lines = out.stdout.splitlines()
    assert header.split() == ["SEQ", "TIME", "UNIT", "EVENT", "STATE", "DETAIL"]
    assert len(lines) == len(events)
    seq, _at, unit, event, state, *_ = lines[0].split()
    assert (int(seq), unit, event, state) == (
        events[0]["seq"], "web", events[0]["event"], events[0]["state"]
    )  # fmt: skip
    as_json = ctl("--since", str(events[0]["seq"] - 1), "--no-follow", "--json", "web")
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == events
    assert ctl("ghost", "--no-follow").returncode == 4
    assert ctl("--since", "1", "--replay", "1").returncode == 2
    # Followed: a restart shows up, however late the command subscribes (--since).
    argv = ["events", "web", "--json", "--since", str(events[-1]["seq"])]
    follow = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli.main", *argv],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        assert running.request("POST", "/v1/units/web/restart")[0] == 200
        deadline = time.monotonic() + 60
        while (line := follow.stdout.readline()) and json.loads(line)["event"] != "started":
            assert time.monotonic() < deadline
        assert json.loads(line)["seq"] > events[-1]["seq"]
    finally:
        follow.kill()  # the test started it
        follow.wait()
