"""How the units a reload started fared: read from the event stream (pure, but for `follow`).

A reload answers at once (the API stays asynchronous); what it set in motion shows up as
events. Its answer names `seq`, the newest event before it acted, so following
`/v1/events?since=seq` misses nothing it caused, and no earlier event (an old run's `ready`,
a crash loop's `backoff` just before the fix) is taken for an outcome. An event's `state` is
the unit's state after it, so one event settles a unit:

    event                            | outcome
    ---------------------------------+-----------------------------------------------------
    started / ready, state running   | running (ready, for `ready = "notify"`)
    failed                           | failed (launch error, start limit, start_timeout)
    backoff                          | backoff: a failure unless the exit was exit-code:0
    exited, state exited             | exited: a failure unless exit-code:0
    removed                          | removed (its file went meanwhile)

Anything else (`stopping` and `stopped` of a restart's old run, `waiting` for `after` units,
`started` while not ready yet) leaves the unit pending; a unit still pending at the deadline
is reported as not settled, which is a failure.

A gap in `seq` means events were dropped (the daemon keeps 1000, and a client that reads
slower than they come loses the oldest of its queue): then the units still pending are looked
up in status once, and those in one of the states above are settled from it.
"""

from __future__ import annotations

import time

from supervisor.cli import names

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    Lookup = Callable[[], list[dict[str, Any]]]  # every unit's status (GET /v1/units)


CLEAN_EXIT = f"{names.EXIT_CODE}0"


class Outcome:
    """A plain class, not a dataclass: the dataclasses module imports inspect (and with it ast,
    dis, tokenize and re), ~10 ms of every `sandboxctl reload`."""

    __slots__ = ("event", "ok", "state", "text")

    def __init__(
        self,
        state: str,  # a State value, or "pending" (not settled by the deadline)
        ok: bool,
        text: str,  # for people: `running`, `failed: launch-error:...`
        event: dict[str, Any] | None = None,  # the event that settled it
    ) -> None:
        self.state, self.ok, self.text, self.event = state, ok, text, event

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "ok": self.ok, "text": self.text, "event": self.event}


def outcome(event: dict[str, Any]) -> Outcome | None:
    """The outcome `event` settles its unit with, or None if it leaves the unit pending."""
    name, state = event.get("event"), event.get("state")
    detail: dict[str, Any] = event.get("detail") or {}
    reason = str(detail.get("reason") or "")
    if name in ("started", "ready") and state == names.RUNNING:
        return Outcome(state, True, "running" + (" (ready)" if name == "ready" else ""), event)
    if name == "failed":
        return Outcome(names.FAILED, False, f"failed: {reason or 'see status'}", event)
    if name == "backoff":
        delay = detail.get("delay")
        when = f" in {delay:g}s" if isinstance(delay, int | float) else ""
        text = f"backoff: restarting{when} after {reason or 'an exit'}"
        return Outcome(names.BACKOFF, reason == CLEAN_EXIT, text, event)
    if name == "exited" and state == names.EXITED:
        return Outcome(state, reason == CLEAN_EXIT, f"exited: {reason}", event)
    if name == "removed":
        return Outcome("removed", True, "removed", event)
    return None


def pending(last: dict[str, Any] | None, timeout: float) -> Outcome:
    """A unit that did not settle within `timeout`: what it was last seen doing."""
    doing = ""
    if last is not None:
        why = (last.get("detail") or {}).get("reason")
        doing = f" ({last['state']} after {last['event']}" + (f": {why}" if why else "") + ")"
    return Outcome("pending", False, f"not settled within {timeout:g}s{doing}", last)


def from_status(unit: dict[str, Any]) -> Outcome | None:
    """The outcome a unit's status shows, when events that would have said it were lost."""
    state, why = unit.get("state"), unit.get("last_exit") or unit.get("error") or ""
    lost = " (from status: events were lost)"
    if state == names.RUNNING:
        return Outcome(state, True, "running" + lost)
    if state == names.FAILED:
        return Outcome(state, False, f"failed: {unit.get('error') or why}{lost}")
    if state == names.BACKOFF:
        return Outcome(state, why == CLEAN_EXIT, f"backoff: after {why}{lost}")
    if state == names.EXITED:
        return Outcome(state, why == CLEAN_EXIT, f"exited: {why}{lost}")
    return None


def settle(
    events: Iterable[dict[str, Any]],
    units: Iterable[str],
    after: int,
    timeout: float,
    lookup: Lookup | None = None,
) -> dict[str, Outcome]:
    """Each of `units`' outcome, from `events` (a stream that ends at the deadline), ignoring
    those numbered `after` or lower (from before the reload acted); after a gap in the
    numbering, from `lookup` for those it settles."""
    waiting = set(units)
    last: dict[str, dict[str, Any]] = {}
    done: dict[str, Outcome] = {}
    newest = after
    for event in events:
        seq = int(event.get("seq") or 0)
        if seq > newest + 1 and lookup is not None:
            for status in lookup():
                found = from_status(status) if status.get("name") in waiting else None
                if found is not None:
                    done[status["name"]] = found
                    waiting.discard(status["name"])
        newest = max(newest, seq)
        unit = event.get("unit")
        if unit not in waiting or (seq and seq <= after):
            continue
        last[unit] = event
        result = outcome(event)
        if result is not None:
            done[unit] = result
            waiting.discard(unit)
        if not waiting:
            break
    for unit in waiting:
        done[unit] = pending(last.get(unit), timeout)
    return done


def deadline(timeout: float) -> float:
    return time.monotonic() + timeout
