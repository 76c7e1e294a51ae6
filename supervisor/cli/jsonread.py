"""JSON text to Python values, as `json.loads` reads the daemon's answers, without the `json`
package: its decoder and scanner import `re` (and with it enum, the regex compiler and its
patterns), ~5 ms of a `sandboxctl status` that needs no regular expression (issue 23).

The parsing is the standard library's own C scanner (`_json.make_scanner`, what json.decoder
uses when it is there), given the settings json.loads uses by default; only the white space
around the value is read here. Where `_json` is missing (another Python), `json.loads` itself.
Bad text raises ValueError, as json.loads does (its JSONDecodeError is one).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# JSON's white space (RFC 8259): what json.decoder's WHITESPACE pattern skips.
_SPACE = " \t\n\r"
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Settings:
    """json.JSONDecoder()'s defaults, the attributes the C scanner reads from its context."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


def _scanner() -> Callable[[str, int], tuple[Any, int]] | None:
    try:
        import _json  # noqa: PLC0415  (CPython's accelerator; absent elsewhere)
    except ImportError:
        return None
    # typeshed types the context as a scanner (json.decoder passes its decoder): any object
    # with the attributes will do.
    scan: Callable[[str, int], tuple[Any, int]] = _json.make_scanner(_Settings())  # type: ignore[arg-type]
    return scan


_scan = _scanner()


def loads(data: str | bytes) -> Any:
    """The value `data` holds (bytes are UTF-8, as the daemon sends them)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if _scan is None:
        import json  # noqa: PLC0415  (only where _json is missing)

        return json.loads(text)
    start = len(text) - len(text.lstrip(_SPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as stop:  # the scanner's "no value here"
        raise ValueError(f"expecting a JSON value at character {stop.value}") from None
    if text[end:].strip(_SPACE):
        raise ValueError(f"extra data after the JSON value at character {end}")
    return value
