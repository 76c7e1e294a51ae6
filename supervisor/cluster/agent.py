"""The node agent: the daemon's side of the fleet, two tasks on the daemon's loop.

- The watch: one full read of the prefix at a revision, then one watch from the revision after
  it, resumed after a reconnect from the last revision seen (on any member), so no change is
  lost or applied twice; a compacted revision means a full read again. Each change of this
  node's unit keys asks the reconciler for a reload (the desired state is a unit source,
  desired.py).
- The reports: `status/<node>/<unit>` = the unit's status object and `nodes/<node>/alive`,
  all under one lease kept alive every third of its TTL, written when something changed
  (coalesced: a burst of changes is one write per unit that differs), never on a timer. A
  node that dies stops renewing: its keys vanish with the lease.

When no member answers, services are left alone (the last applied state runs on), one
`cluster.unreachable` line opens the episode and `cluster.reachable` closes it; both tasks
retry every second, and the reports are written again as they are then.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from supervisor.cluster import keys
from supervisor.cluster.desired import DesiredState
from supervisor.cluster.gateway import (
    Compacted,
    EtcdError,
    Gateway,
    Unreachable,
    b64,
    tls_context,
)
from supervisor.config import ClusterConfig
from supervisor.log import get_logger

log = get_logger()
RETRY = 1.0  # seconds between attempts while etcd is unreachable
CLOSE_TIMEOUT = 3.0  # the daemon's exit does not wait longer for etcd
TXN_OPS = 100  # reports written per transaction; etcd refuses over --max-txn-ops (128)
# Fields of a status that change without a state change (they are read, not told): left out
# of the report, which is written on change only.
VOLATILE = ("memory_bytes", "uptime", "next_start_in")


class Agent:
    def __init__(
        self,
        config: ClusterConfig,
        reload: Callable[[], Awaitable[object]],
        reported: Callable[[Collection[str] | None], dict[str, dict[str, Any]]],
        gateway: Gateway | None = None,
    ) -> None:
        self.config = config
        self.prefix, self.node = keys.normalized(config.prefix), config.node
        self.desired = DesiredState(self.prefix, self.node)
        self.gateway = gateway or Gateway(
            config.endpoints,
            tls_context(*(str(p) if p else None for p in (config.ca, config.cert, config.key))),
        )
        self._reload, self._reported = reload, reported
        self._dirty = asyncio.Event()
        self._dirty.set()  # the first reports
        # The units whose state changed since the last reports; None: every unit (a reload,
        # a new lease, a failed write). Only those are asked for: a thousand units starting
        # one by one must not cost a million status reads.
        self._pending: set[str] | None = None
        self.unreachable_since: float | None = None  # monotonic, while an episode lasts
        self.episodes = 0  # for the metric: how many times etcd became unreachable
        # Told True at the first answer and at each episode's end, False at its start.
        self.reachability_observers: list[Callable[[bool], None]] = []
        self._answered = False
        self._written: dict[str, str] = {}  # unit -> the report last written (its JSON)
        self._lease = 0

    def changed(self, name: str | None = None) -> None:
        """Unit `name`'s state changed, or (None) a reload happened: report soon."""
        if name is None:
            self._pending = None
        elif self._pending is not None:
            self._pending.add(name)
        self._dirty.set()

    async def run(self) -> None:
        """Both tasks, until cancelled (then `close`)."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch_loop(), name="cluster:watch")
            tg.create_task(self._report_loop(), name="cluster:report")

    async def close(self) -> None:
        """Give the lease back, so that a node stopped on purpose leaves no reports behind
        (a crash leaves them for one TTL), and close the connections."""
        try:
            if self._lease:
                await asyncio.wait_for(self.gateway.revoke(self._lease), CLOSE_TIMEOUT)
        except (Unreachable, EtcdError, TimeoutError):
            pass  # it expires by itself
        finally:
            await self.gateway.close()

    # -- reachability ----------------------------------------------------------------------

    def _unreachable(self, problem: Exception) -> None:
        if self.unreachable_since is None:
            self.unreachable_since = time.monotonic()
            self.episodes += 1
            log.warning("cluster.unreachable", endpoints=self.gateway.endpoints,
                        error=str(problem), services="left as they are")  # fmt: skip
            self._tell(False)

    def _reachable(self) -> None:
        if self.unreachable_since is not None:
            seconds = round(time.monotonic() - self.unreachable_since, 3)
            self.unreachable_since = None
            log.info("cluster.reachable", after_seconds=seconds)
            self._tell(True)
        elif not self._answered:
            self._tell(True)
        self._answered = True

    def _tell(self, reachable: bool) -> None:
        for observe in self.reachability_observers:
            observe(reachable)

    # -- desired state ---------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        start, end = keys.watched(self.prefix)
        full_read = True
        while True:
            try:
                if full_read:
                    revision, kvs = await self.gateway.range(start, end)
                    self._reachable()
                    self.desired.reset(revision, kvs)
                    full_read = False
                    log.info("cluster.read", revision=revision, units=len(self.desired.chosen()))
                    await self._reload()
                async for batch in self.gateway.watch(start, end, self.desired.revision + 1):
                    self._reachable()
                    if self.desired.apply(batch):
                        await self._reload()
            except Compacted as exc:
                log.warning("cluster.compacted", revision=self.desired.revision,
                            compact_revision=exc.compact_revision)  # fmt: skip
                full_read = True
            except Unreachable as exc:
                self._unreachable(exc)
                await asyncio.sleep(RETRY)
            except EtcdError as exc:
                log.warning("cluster.error", error=str(exc))
                await asyncio.sleep(RETRY)

    def applied_revision(self, name: str) -> int | None:
        return self.desired.valid_revision.get(name)

    # -- reported state --------------------------------------------------------------------

    async def _report_loop(self) -> None:
        interval = max(1.0, self.config.lease_ttl / 3)
        renew_at = 0.0
        while True:
            timeout = max(0.0, renew_at - time.monotonic()) if self._lease else RETRY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout)
            try:
                if self._lease and time.monotonic() >= renew_at:
                    if await self.gateway.keepalive(self._lease) <= 0:
                        log.warning("cluster.lease_expired", lease=self._lease)
                        self._lease = 0
                    renew_at = time.monotonic() + interval
                if not self._lease:
                    await self._new_lease()
                    renew_at = time.monotonic() + interval
                if self._dirty.is_set():
                    self._dirty.clear()
                    names, self._pending = self._pending, set()
                    await self._report(names)
                self._reachable()
            except (Unreachable, EtcdError) as exc:
                self.changed()  # whatever was not written is written next time
                if isinstance(exc, Unreachable):
                    self._unreachable(exc)
                else:
                    log.warning("cluster.error", error=str(exc))
                    if "lease not found" in str(exc):  # expired while we could not renew it
                        self._lease = 0
                await asyncio.sleep(RETRY)

    async def _new_lease(self) -> None:
        self._lease = await self.gateway.grant(self.config.lease_ttl)
        self._written = {}  # the old lease's keys are gone (or going): write every report
        self._pending = None
        alive = {"node": self.node, "since": _now(), "lease_ttl": self.config.lease_ttl}
        await self.gateway.put(keys.alive_key(self.prefix, self.node), json.dumps(alive),
                               self._lease)  # fmt: skip
        # Reports of an earlier lease of ours that has not expired yet (a restart after kill -9)
        # would keep units that are gone now: clear them, the current ones follow.
        await self.gateway.delete(*_dir_range(keys.status_dir(self.prefix, self.node)))

    async def _report(self, names: set[str] | None) -> None:
        """Write the reports of `names` (None: every unit) that differ from what was written,
        and delete those of units that are gone."""
        current = {}
        for name, status in self._reported(names).items():
            data = {k: v for k, v in status.items() if k not in VOLATILE}
            data["node"] = self.node
            data["revision"] = self.applied_revision(name)
            current[name] = json.dumps(data, sort_keys=True)
        now = _now()
        ops: list[tuple[str, dict[str, Any]]] = []
        for name, text in sorted(current.items()):
            if self._written.get(name) != text:
                body = json.dumps(json.loads(text) | {"reported_at": now})
                key = b64(keys.status_key(self.prefix, self.node, name))
                ops.append((name, {"request_put": {"key": key, "value": b64(body),
                                                   "lease": str(self._lease)}}))  # fmt: skip
        asked = self._written.keys() if names is None else names & self._written.keys()
        for name in sorted(asked - current.keys()):
            key = b64(keys.status_key(self.prefix, self.node, name))
            ops.append((name, {"request_delete_range": {"key": key}}))
        # A burst of changes (a thousand units starting) is a few transactions, not a request
        # per unit; each below etcd's default limit of operations per transaction.
        for at in range(0, len(ops), TXN_OPS):
            batch = ops[at : at + TXN_OPS]
            await self.gateway.txn([], [op for _name, op in batch])
            for name, _op in batch:
                if name in current:
                    self._written[name] = current[name]
                else:
                    del self._written[name]


def _dir_range(prefix: str) -> tuple[str, str]:
    return prefix, keys.prefix_end(prefix)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
