"""The node agent's watch loop against a scripted gateway (cluster/agent.py): a compacted
revision means a full read, an outage is one `cluster.unreachable` line however many retries,
and a resumed watch starts after the last revision seen. The real etcd cluster is
tests/integration/test_fleet.py's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from supervisor.cluster import agent as agent_module
from supervisor.cluster.agent import Agent
from supervisor.cluster.gateway import Compacted, Event, KeyValue, Unreachable, WatchBatch
from supervisor.config import ClusterConfig

P = "/sandboxd/v1"
UNIT = b'[service]\nexec = ["/bin/sleep", "1000"]\n'


class Script:
    """Each `range` answers the next of `reads`; each `watch` runs the next of `watches`: a
    list of batches to yield and exceptions to raise; a watch that raised none stays open (until
    cancelled)."""

    def __init__(self, reads: list[tuple[int, list[KeyValue]]], watches: list[Any]) -> None:
        self.reads, self.watches = reads, watches
        self.ranges = 0
        self.starts: list[int] = []
        self.endpoints = ["http://fake:2379"]

    async def range(self, key: str, end: str | None = None, revision: int = 0) -> Any:
        self.ranges += 1
        return self.reads.pop(0)

    async def watch(self, key: str, end: str, start_revision: int) -> AsyncIterator[WatchBatch]:
        self.starts.append(start_revision)
        for item in self.watches.pop(0) if self.watches else []:
            if isinstance(item, BaseException):
                raise item
            yield item
        await asyncio.Event().wait()

    async def close(self) -> None:
        pass


def kv(name: str, rev: int) -> KeyValue:
    return KeyValue(f"{P}/all/units/{name}", UNIT, rev)


async def run_until(agent: Agent, done: Any) -> None:
    task = asyncio.create_task(agent._watch_loop())
    try:
        for _ in range(1000):
            if done():
                return
            await asyncio.sleep(0.001)
        raise AssertionError("condition never held")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def make(script: Script, reloads: list[int]) -> Agent:
    async def reload() -> None:
        reloads.append(1)

    config = ClusterConfig(endpoints=["http://fake:2379"], node="n1")
    return Agent(config, reload, lambda _names: {}, gateway=script)  # type: ignore[arg-type]


def test_compaction_reads_everything_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_module, "RETRY", 0.0)
    script = Script(
        reads=[(10, [kv("a", 5)]), (40, [kv("b", 30)])],
        watches=[[Compacted(20)]],
    )
    reloads: list[int] = []
    agent = make(script, reloads)
    with capture_logs() as logs:
        asyncio.run(run_until(agent, lambda: script.ranges == 2 and len(script.starts) == 2))
    assert script.starts == [11, 41]
    assert sorted(agent.desired.chosen()) == ["b"] and len(reloads) == 2
    assert [e["event"] for e in logs if e["event"].startswith("cluster.")] == [
        "cluster.read", "cluster.compacted", "cluster.read"]  # fmt: skip


def test_an_outage_is_one_line_and_the_watch_resumes_after_the_last_revision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(agent_module, "RETRY", 0.0)
    change = WatchBatch(12, [Event(kv("b", 12), deleted=False)])
    script = Script(
        reads=[(10, [kv("a", 5)])],
        # The first watch yields its change, then its stream breaks (its member killed); no
        # member takes the next three; the fifth is taken and stays open.
        watches=[
            [change, Unreachable("reset")],
            *[[Unreachable("down")]] * 3,
            [WatchBatch(13, [], created=True)],
        ],
    )
    reloads: list[int] = []
    agent = make(script, reloads)
    told: list[bool] = []
    agent.reachability_observers.append(told.append)
    with capture_logs() as logs:
        asyncio.run(run_until(agent, lambda: len(script.starts) == 5))
    assert told == [True, False, True]  # the metric: up, one episode down, up again
    assert script.ranges == 1 and len(reloads) == 2  # the read, the change: nothing twice
    assert script.starts == [11, 13, 13, 13, 13]
    events = [e["event"] for e in logs if e["event"].startswith("cluster.")]
    assert events.count("cluster.unreachable") == 1 and "cluster.reachable" in events
    assert sorted(agent.desired.chosen()) == ["a", "b"]
