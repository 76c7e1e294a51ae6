from __future__ import annotations

import math

import pytest

from supervisor.unit.quantities import (
    format_duration,
    format_size,
    parse_duration,
    parse_signal,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("0", 0.0),
        ("0s", 0.0),
        (" 2D ", 172800.0),
        (7, 7.0),
        (1.5, 1.5),
        ("1500us", 0.0015),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-5s", "duration '-5s' is negative"),
        (-1, "duration -1 is negative"),
        ("10", "invalid duration '10'"),
        ("10 s", "invalid duration '10 s'"),
        ("s", "invalid duration 's'"),
        ("", "invalid duration ''"),
        ("100000h", "longer than a year"),
        (10**400, "longer than a year"),  # float() of it would overflow
        (math.inf, "longer than a year"),
        (math.nan, "not nan"),
        (True, "not a boolean"),
        ([1], "got list"),
    ],
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_duration(value)


def test_durations_round_to_the_canonical_resolution() -> None:
    # Below 1us the canonical spelling is "0s"; the parsed value must agree with it.
    assert parse_duration("0.0000001s") == 0.0
    assert format_duration(parse_duration("0.0000001s")) == "0s"
    assert format_duration(1e-7) == "0s"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.1, "100ms"), (90, "90s"), (300, "5m"), (86400, "1d"), (0.0015, "1500us")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64M", 64 << 20),
        ("1G", 1 << 30),
        ("512k", 512 << 10),
        ("1.5K", 1536),
        ("2MiB", 2 << 20),
        ("10MB", 10 << 20),
        (4096, 4096),
        ("max", None),
        ("0", 0),
    ],
)
def test_parse_size(text: object, size: int | None) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1M", "size '-1M' is negative"),
        (-1, "size -1 is negative"),
        ("1P", "invalid size '1P'"),
        ("lots", "invalid size 'lots'"),
        ("65T", "larger than 64T"),
        ("9" * 400, "larger than 64T"),  # int(float(...)) would overflow
        (1.5, "got float"),
        (False, "not a boolean"),
    ],
)
def test_parse_size_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_size(value)


@pytest.mark.parametrize(
    ("size", "text"), [(None, "max"), (0, "0"), (1024, "1K"), (1536, "1536"), (3 << 30, "3G")]
)
def test_format_size(size: int | None, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("value", "name"),
    [("SIGTERM", "SIGTERM"), ("term", "SIGTERM"), ("HUP", "SIGHUP"), (2, "SIGINT")],
)
def test_parse_signal(value: object, name: str) -> None:
    assert parse_signal(value) == name


@pytest.mark.parametrize("value", ["SIGFOO", "SIGKILL", "STOP", 999, True, 1.0])
def test_parse_signal_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_signal(value)
