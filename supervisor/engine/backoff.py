"""The restart policy of one unit: whether to restart after an exit, and after how long.

Pure arithmetic over an injected monotonic clock, so the table-driven tests can replay any
history without sleeping:

* `delay` doubles with each consecutive restart, capped at `max_delay`;
* a run that lasted `reset_after` or more resets the doubling;
* more than `burst` starts within `interval` (counting the start being planned, at the time it
  would happen) means the unit gives up: state `failed` until an operator `start`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from supervisor.unit.schema import Restart

Clock = Callable[[], float]
Verdict = Literal["restart", "done", "give-up"]


def is_failure(reason: str) -> bool:
    """Every end but a clean `exit-code:0` counts as a failure for `on-failure`."""
    return reason != "exit-code:0"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    delay: float = 0.0  # seconds until the restart (verdict "restart")
    why: str = ""  # words for status and logs


@dataclass(slots=True)  # one a unit: slots, and a list (a deque starts at ~600 bytes)
class Backoff:
    policy: Restart
    clock: Clock = time.monotonic
    consecutive: int = 0  # restarts since the last long-enough run
    starts: list[float] = field(default_factory=list)  # monotonic times of recent starts

    def record_start(self) -> None:
        self.starts.append(self.clock())
        self._forget_before(self.clock() - self.policy.interval)
        if len(self.starts) > self.policy.burst:  # older ones can no longer decide anything
            del self.starts[: len(self.starts) - self.policy.burst]

    def reset(self) -> None:
        """An operator `start`: forget the failures and the start history."""
        self.consecutive = 0
        self.starts.clear()

    def next_delay(self) -> float:
        delay: float = self.policy.delay * 2.0**self.consecutive
        return min(delay, self.policy.max_delay)

    def on_exit(self, reason: str, ran_for: float) -> Decision:
        """What to do after a run that ended with `reason` after `ran_for` seconds."""
        p = self.policy
        wanted = p.policy == "always" or (p.policy == "on-failure" and is_failure(reason))
        if not wanted:
            return Decision("done", why=f"restart policy {p.policy!r} after {reason}")
        if ran_for >= p.reset_after:
            self.consecutive = 0
        delay = self.next_delay()
        at = self.clock() + delay
        self._forget_before(at - p.interval)
        if len(self.starts) >= p.burst:
            return Decision(
                "give-up",
                why=f"start limit hit: more than {p.burst} starts within {p.interval:g}s "
                f"(last exit {reason})",
            )
        self.consecutive = min(self.consecutive + 1, 64)  # 2**64 * delay is past any max
        return Decision("restart", delay, why=f"restart in {delay:g}s after {reason}")

    def _forget_before(self, cutoff: float) -> None:
        # A start exactly `interval` before the planned one is outside the window.
        starts, old = self.starts, 0
        while old < len(starts) and starts[old] <= cutoff:
            old += 1
        del starts[:old]
