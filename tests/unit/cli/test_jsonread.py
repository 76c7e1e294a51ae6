"""sandboxctl reads the daemon's JSON with the C scanner alone: what json.loads reads."""

from __future__ import annotations

import json
import math

import pytest

from supervisor.cli import jsonread

TEXTS = [
    '{"units": [{"name": "web", "pid": 4242, "uptime": 12.5, "error": null, "ok": true}]}',
    '  \n\t{"a": {"b": [[], {}, [1, -2, 3e2, 1.5e-3, 12345678901234567890]]}} \r\n',
    '"caf\\u00e9 \\ud83d\\ude00 \\"quoted\\" back\\\\slash \\n"',
    '["\u00e9t\u00e9", false, null]',
    "0",
    "[Infinity, -Infinity]",
]


@pytest.mark.parametrize("text", TEXTS)
def test_the_same_values_as_json_loads(text: str) -> None:
    assert jsonread.loads(text) == json.loads(text)
    assert jsonread.loads(text.encode()) == json.loads(text.encode())


def test_nan_is_read() -> None:
    assert math.isnan(jsonread.loads("NaN"))


@pytest.mark.parametrize(
    "bad", ["", "   ", "{", '{"a" 1}', "[1] 2", "[1,]", '"\x01"', "nul", b"\xff"]
)
def test_bad_text_is_a_value_error(bad: str | bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(bad)
    with pytest.raises(ValueError):
        jsonread.loads(bad)
