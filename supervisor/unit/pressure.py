"""`[oom] pressure_limit` and `pressure_action`: the pre-OOM pressure condition and its answer.

The condition is one comparison, `RESOURCE.KIND.WINDOW > N`: `memory.full.avg10 > 40` holds
while, averaged over the last 10 s, all of the unit's tasks were stalled on memory more than
40% of the time (the kernel's PSI, a cgroup's `memory.pressure`). A language this small is
parsed by one regular expression, so every mistake gets one message naming what is expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

from supervisor.unit.quantities import parse_signal

RESOURCES = ("cpu", "memory", "io")
KINDS = ("some", "full")
WINDOWS = ("avg10", "avg60")
Resource = Literal["cpu", "memory", "io"]
Kind = Literal["some", "full"]
Window = Literal["avg10", "avg60"]

_FORM = '"RESOURCE.KIND.WINDOW > N", e.g. "memory.full.avg10 > 40"'
_EXPR = re.compile(r"\s*([a-z0-9]+)\.([a-z0-9]+)\.([a-z0-9]+)\s*([<>=!]+)\s*(\S+)\s*")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class PressureLimit:
    resource: Resource
    kind: Kind  # some: at least one task stalled; full: all of them at once
    window: Window
    threshold: float  # percent of wall time, 0 <= threshold < 100

    def __str__(self) -> str:
        return f"{self.resource}.{self.kind}.{self.window} > {self.threshold:g}"


def parse_pressure_limit(value: object) -> PressureLimit:
    if isinstance(value, PressureLimit):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a string {_FORM}, got {type(value).__name__}")
    match = _EXPR.fullmatch(value.lower())
    if match is None:
        raise ValueError(f"{value!r} is not of the form {_FORM}")
    resource, kind, window, op, number = match.groups()
    for part, choices, what in (
        (resource, RESOURCES, "resource"),
        (kind, KINDS, "kind"),
        (window, WINDOWS, "window"),
    ):
        if part not in choices:
            listed = ", ".join(choices)
            raise ValueError(f"unknown {what} {part!r} in {value!r}: one of {listed}")
    if op != ">":
        raise ValueError(f'{value!r}: the only comparison is ">" (the limit is exceeded)')
    if _NUMBER.fullmatch(number) is None:
        raise ValueError(f"{value!r}: {number!r} is not a percentage such as 40 or 12.5")
    threshold = float(number)
    if not 0 <= threshold < 100:
        raise ValueError(f"{value!r}: the percentage must be from 0 to below 100")
    return PressureLimit(
        cast(Resource, resource), cast(Kind, kind), cast(Window, window), threshold
    )


ACTIONS = ("restart", "stop", "signal:NAME")


def parse_pressure_action(value: object) -> str:
    """`restart`, `stop` or `signal:SIGNAME` (the name as parse_signal spells it)."""
    if not isinstance(value, str):
        raise ValueError(f'expected "restart", "stop" or "signal:NAME", got {type(value).__name__}')
    text = value.strip()
    if text in ("restart", "stop"):
        return text
    head, sep, name = text.partition(":")
    if sep and head.strip().lower() == "signal":
        name = name.strip()
        if name.upper().removeprefix("SIG") in ("KILL", "STOP"):
            raise ValueError(
                f'{value!r}: use "restart" or "stop" to end the run (stop_signal, then SIGKILL)'
            )
        return "signal:" + parse_signal(int(name) if name.isdigit() else name)
    raise ValueError(f'{value!r} is not "restart", "stop" or "signal:NAME" (e.g. "signal:SIGUSR1")')


def action_signal(action: str) -> str | None:
    """The signal name of a `signal:NAME` action, else None."""
    return action.partition(":")[2] or None
