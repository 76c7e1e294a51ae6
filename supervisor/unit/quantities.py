"""Durations, sizes and signal names as they appear in unit files (pure functions).

Each parser accepts the human spelling and returns a plain number; each formatter gives the
one canonical spelling back, so a spec written out and read again hashes the same.
"""

from __future__ import annotations

import math
import re
import signal

_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)")
# A year: longer than any sane timeout or delay, so larger values are typos ("10000h").
MAX_DURATION = 366 * 86400.0

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)
# 64 TiB: no host we target has more memory or a disk for a tmpfs that large.
MAX_SIZE = 64 << 40


def parse_duration(value: object) -> float:
    """Seconds from `"250ms"`, `"1m30s"`, `"0"` or a bare number of seconds.

    The result is rounded to whole microseconds, the resolution of `format_duration`, so the
    value in the model and its canonical spelling always mean the same.
    """
    if isinstance(value, bool):
        raise ValueError('expected a duration such as "10s", not a boolean')
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isnan(value):
            raise ValueError('expected a duration such as "10s", not nan')
        # float(10**400) overflows; anything that large is absurd anyway.
        seconds = (
            float(value) if abs(value) <= MAX_DURATION else math.inf * (1 if value > 0 else -1)
        )
    elif isinstance(value, str):
        text = value.strip().lower()
        if text.startswith("-"):
            raise ValueError(f"duration {value!r} is negative")
        if text in ("0", "0s"):
            return 0.0
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError(
                f"invalid duration {value!r}: use a number with a unit, "
                'e.g. "250ms", "10s", "5m", "1h"'
            )
    else:
        raise ValueError(f'expected a duration such as "10s", got {type(value).__name__}')
    if seconds < 0:
        raise ValueError(f"duration {value!r} is negative")
    if seconds > MAX_DURATION:
        raise ValueError(f"duration {value!r} is longer than a year; is the unit right?")
    return round(seconds * 1_000_000) / 1_000_000


def format_duration(seconds: float) -> str:
    """The canonical spelling: the largest unit that expresses the value exactly."""
    micros = round(seconds * 1_000_000)
    if micros == 0:
        return "0s"
    for unit, factor in (
        ("d", 86_400_000_000),
        ("h", 3_600_000_000),
        ("m", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
    ):
        if micros % factor == 0:
            return f"{micros // factor}{unit}"
    return f"{micros}us"


def parse_size(value: object) -> int | None:
    """Bytes from `"64M"`, `"1G"`, `"512K"`, a bare integer; None for `"max"` (unlimited)."""
    if isinstance(value, bool):
        raise ValueError('expected a size such as "64M", not a boolean')
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        text = value.strip()
        if text.lower() == "max":
            return None
        if text.startswith("-"):
            raise ValueError(f"size {value!r} is negative")
        match = _SIZE.fullmatch(text)
        if not match:
            raise ValueError(
                f"invalid size {value!r}: use a number with an optional K, M, G or T suffix, "
                'or "max"'
            )
        # Checked as a float first: int(float("1e400")) would raise OverflowError.
        scaled = float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
        size = int(scaled) if scaled <= MAX_SIZE else MAX_SIZE + 1
    else:
        raise ValueError(f'expected a size such as "64M", got {type(value).__name__}')
    if size < 0:
        raise ValueError(f"size {value!r} is negative")
    if size > MAX_SIZE:
        raise ValueError(f"size {value!r} is larger than 64T; is the suffix right?")
    return size


def format_size(size: int | None) -> str:
    """The canonical spelling: the largest binary suffix that expresses the value exactly."""
    if size is None:
        return "max"
    for suffix, factor in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def parse_signal(value: object) -> str:
    """`"SIGTERM"` from `"SIGTERM"`, `"term"`, `"TERM"` or 15."""
    if isinstance(value, bool):
        raise ValueError('expected a signal name such as "SIGTERM"')
    if isinstance(value, int):
        try:
            return signal.Signals(value).name
        except ValueError:
            raise ValueError(f"no signal with number {value}") from None
    if not isinstance(value, str):
        raise ValueError(f'expected a signal name such as "SIGTERM", got {type(value).__name__}')
    name = value.strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name not in signal.Signals.__members__ or name in ("SIGKILL", "SIGSTOP"):
        hint = " (SIGKILL always follows stop_timeout anyway)" if name == "SIGKILL" else ""
        raise ValueError(f"unknown or unusable signal {value!r}{hint}")
    return name
