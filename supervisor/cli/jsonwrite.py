"""Python values to JSON text, as `json.dumps(value)` writes them, without the `json` package:
its decoder imports `re` (and with it enum, functools and collections), ~5 ms of a sandboxctl
call that writes JSON (a request's body, --json output) and reads none with it (issue 23).

The encoding is the standard library's own C encoder (`_json.make_encoder`, what json.encoder
uses for a one-shot dumps), given json.dumps's defaults: ASCII only, `", "` and `": "`,
circular references checked, NaN and the infinities allowed, and a TypeError for anything
else, worded as json's. Where `_json` is missing (another Python), `json.dumps` itself.
tests/unit/cli/test_jsonwrite.py holds it to json.dumps.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    from typing import Any

try:
    import _json  # CPython's accelerator; absent elsewhere
except ImportError:  # pragma: no cover - another Python
    _json = None  # type: ignore[assignment]


def _default(value: object) -> object:
    """json.JSONEncoder.default: nothing else is JSON."""
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    """json.dumps(value)'s text."""
    if _json is None:
        import json  # noqa: PLC0415  (only where _json is missing)

        return json.dumps(value)
    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    # Made per call, as json.dumps makes it: `markers` (the circular-reference check) is per
    # call. The arguments are json.encoder's for JSONEncoder()'s defaults.
    encode = _json.make_encoder(
        {}, _default, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
    return "".join(encode(value, 0))
