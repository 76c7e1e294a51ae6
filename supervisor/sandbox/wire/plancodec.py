"""`ChildPlan` <-> JSON, for the trip from the daemon to the fork server.

The plan is a tree of frozen dataclasses (the plan, its capability plan, the mount ops) holding
str, int, bool, None, bytes and tuples. Each dataclass becomes an object tagged with its class
name, tuples become arrays (and arrays come back as tuples: every sequence in a plan is a
tuple). Bytes (the /etc copies, ~150 KB for a host root, and the seccomp program) travel out of
band, after the JSON, referenced by offset and length: base64 and JSON-escaping them cost
milliseconds per launch, a memcpy costs microseconds. Wire format: a 4-byte big-endian JSON
length, the JSON, the concatenated blobs. Only the classes listed in `_CLASSES` are accepted
on the way back: the fork server runs as root and must not build anything the daemon did not
mean to send.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any

from supervisor.linux.caps import CapPlan
from supervisor.sandbox.child.privileges import Privileges
from supervisor.sandbox.child.stage import ChildPlan
from supervisor.sandbox.wire import mounts
from supervisor.sandbox.wire.protocol import ProtocolError

_CLASSES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        ChildPlan,
        Privileges,
        CapPlan,
        mounts.Mkdir,
        mounts.Mount,
        mounts.Bind,
        mounts.Symlink,
        mounts.WriteFile,
        mounts.WriteInRoot,
        mounts.Mask,
        mounts.ReadOnly,
        mounts.RemountRoot,
        mounts.PivotRoot,
        mounts.Hold,
    )
}
_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _CLASSES.values()}
_TYPE, _BYTES = "@t", "@b"
_LEN = struct.Struct(">I")


def _to_json(value: object, blobs: list[bytes], offset: list[int]) -> object:
    if value is None or isinstance(value, str | int):  # bool is an int
        return value
    names = _FIELDS.get(type(value))
    if names is not None:
        out: dict[str, object] = {_TYPE: type(value).__name__}
        for name in names:
            out[name] = _to_json(getattr(value, name), blobs, offset)
        return out
    if isinstance(value, bytes):
        blobs.append(value)
        offset[0] += len(value)
        return {_BYTES: [offset[0] - len(value), len(value)]}
    if isinstance(value, tuple | list):
        return [_to_json(v, blobs, offset) for v in value]
    raise TypeError(f"cannot encode {type(value).__name__} in a plan")


def _from_json(value: object, blobs: memoryview) -> object:
    if isinstance(value, list):
        return tuple(_from_json(v, blobs) for v in value)
    if isinstance(value, dict):
        if _BYTES in value:
            start, length = value[_BYTES]
            if start < 0 or length < 0 or start + length > len(blobs):
                raise ValueError(f"blob {start}+{length} outside the {len(blobs)} bytes sent")
            return bytes(blobs[start : start + length])
        cls = _CLASSES[value.pop(_TYPE)]
        return cls(**{k: _from_json(v, blobs) for k, v in value.items()})
    return value


def encode_plan(plan: ChildPlan) -> bytes:
    blobs: list[bytes] = []
    doc = json.dumps(_to_json(plan, blobs, [0]), separators=(",", ":")).encode()
    return b"".join((_LEN.pack(len(doc)), doc, *blobs))


def decode_plan(data: bytes) -> ChildPlan:
    """The plan; ProtocolError naming what arrived if it is not one."""
    try:
        (size,) = _LEN.unpack_from(data)
        view = memoryview(data)
        plan = _from_json(json.loads(data[4 : 4 + size]), view[4 + size :])
    except (ValueError, KeyError, TypeError, struct.error) as err:
        what = f"{data[:200]!r} ({type(err).__name__}: {err})"
        raise ProtocolError("a ChildPlan", what) from None
    if not isinstance(plan, ChildPlan):
        raise ProtocolError("a ChildPlan", type(plan).__name__)
    return plan
