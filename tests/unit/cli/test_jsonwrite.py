"""sandboxctl writes JSON with the C encoder alone: the text json.dumps writes."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.cli import jsonwrite

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
KEYS = st.text() | st.integers() | st.floats() | st.booleans() | st.none()
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner) | st.dictionaries(KEYS, inner), max_leaves=30
)


@given(VALUES)
def test_the_text_json_dumps_writes(value: object) -> None:
    assert jsonwrite.dumps(value) == json.dumps(value)


def test_a_tuple_is_a_list_and_unicode_is_escaped() -> None:
    value = {"unit": ("web", 1), "text": 'caf\u00e9 \U0001f600 "q" \\ \n\x00'}
    assert jsonwrite.dumps(value) == json.dumps(value)


def _circular() -> list[object]:
    loop: list[object] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    "bad", [object(), {"a": {1, 2}}, {(1, 2): 3}, b"bytes", _circular()], ids=repr
)
def test_what_json_refuses_is_refused_alike(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)) as expected:
        json.dumps(bad)
    with pytest.raises(expected.type, match="^" + re.escape(str(expected.value))):
        jsonwrite.dumps(bad)
