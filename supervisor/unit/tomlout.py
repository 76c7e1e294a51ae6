"""A validated unit back as TOML text: what `sandboxctl cat --effective` prints.

Only the shapes a unit's JSON form has: tables of scalars, arrays of scalars, nested tables
(`[service.env]`) and arrays of tables (`[[sandbox.mounts]]`). TOML has no null, so a key that
is unset (None: e.g. `cpu_max`, or `[health]` itself) is written as a comment saying so, except
`pids_max`, whose None (unlimited) is not its default: it is written "max". The output parses
back to the same unit. Sizes are already strings ("64M", "max") in the JSON form.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

UNSET = "not set"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _string(text: str) -> str:
    # A JSON string is a TOML basic string (the same escapes, \u for control characters),
    # except DEL, which JSON leaves raw and TOML forbids.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _string(name)


def scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):  # never in a valid unit; TOML spells them so
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {scalar(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _table(path: str, table: dict[str, Any], out: list[str], header: str) -> None:
    out.append(header)
    nested: list[tuple[str, Any]] = []
    for key, value in table.items():
        if value is None:
            out.append(f"# {_key(key)}: {UNSET}")
        elif isinstance(value, dict) or _is_table_array(value):
            nested.append((key, value))
        else:
            out.append(f"{_key(key)} = {scalar(value)}")
    for key, value in nested:
        sub = f"{path}.{_key(key)}"
        if isinstance(value, dict):
            out.append("")
            _table(sub, value, out, f"[{sub}]")
        else:
            for item in value:
                out.append("")
                _table(sub, item, out, f"[[{sub}]]")


def dumps(unit: dict[str, Any]) -> str:
    """`unit` (a UnitFile's `model_dump(mode="json")`) as TOML, one table per section."""
    out: list[str] = []
    resources = unit.get("resources")
    if isinstance(resources, dict) and "pids_max" in resources and resources["pids_max"] is None:
        # Unlimited, but the default is 1024: left out, it would read back as 1024.
        unit = {**unit, "resources": {**resources, "pids_max": "max"}}
    # Top-level keys first: in TOML, a key after a table header belongs to that table.
    plain = [(k, v) for k, v in unit.items() if not isinstance(v, dict) and not _is_table_array(v)]
    for section, value in plain:
        if value is None:
            out.append(f"# [{_key(section)}]: {UNSET}")
        else:
            out.append(f"{_key(section)} = {scalar(value)}")
    for section, value in unit.items():
        if isinstance(value, dict):
            if out:
                out.append("")
            _table(_key(section), value, out, f"[{_key(section)}]")
        elif _is_table_array(value):
            for item in value:
                if out:
                    out.append("")
                _table(_key(section), item, out, f"[[{_key(section)}]]")
    return "\n".join(out) + "\n"
