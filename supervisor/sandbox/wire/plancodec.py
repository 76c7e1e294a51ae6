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

Blobs that recur from launch to launch (the seccomp program, the /etc copies: the fields in
`CACHEABLE`) travel once: `encode_cached` offers a new one to the fork server (its ForkRequest
lists the blob's SHA-256, offset and length; the server keeps it), and once the server holds it
a plan names it by digest only ({"@c": digest}); the spare launcher, forked from the server,
has a copy of the server's cache. What the server holds is bounded by the daemon's budget.

A plan's mount operations (`root_ops`, the bulk of its JSON) recur too: the daemon plans a
unit's root once per revision and host state (host/plancache.py), so a relaunch carries the
very same tuple. The first plan carrying it offers it as a part ({"@p": token, "v": [...]},
listed in the ForkRequest's `parts`); the server decodes it once and keeps the decoded ops,
and later plans carrying the same tuple (by identity: the daemon never sends a token for
other contents) name it by token only ({"@p": token}): the spare forked after holds the ops
already and decodes nothing of them. Root ops made of segments (mounts.SegmentedOps: units
that differ by their hostname alone share all but their own /etc/hostname and /etc/hosts)
travel as {"@s": [segment, ...]}, each segment a part of its own (or inline), and arrive as
one tuple.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Callable, Container, Mapping, MutableMapping, Set
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
_TYPE, _BYTES, _CACHED, _PART, _VALUE, _SEGMENTS = "@t", "@b", "@c", "@p", "v", "@s"
_LEN = struct.Struct(">I")
# The same bytes in every launch of a unit (never credentials: a secret must not outlive its
# launch in the fork server).
CACHEABLE = frozenset(
    {(Privileges, "seccomp_bpf"), (mounts.WriteFile, "data"), (mounts.WriteInRoot, "data")}
)
CACHED_MIN = 256  # bytes: a smaller blob costs no more inline than its digest does

Offer = tuple[str, int, int]  # a blob for the server to keep: (SHA-256 hex, offset, length)
Ops = tuple[object, ...]
# Daemon side: the op tuples the server keeps decoded, id(ops) -> (token, ops); the tuple is
# held so that its id is not reused while the entry lives.
HeldParts = Mapping[int, tuple[str, Ops]]
PartOffer = tuple[str, int, Ops]  # (token, how many ops, the tuple itself)


class _Encoder:
    def __init__(
        self,
        held: Set[str],
        budget: int,
        parts: HeldParts | None = None,
        token: Callable[[], str] | None = None,
        part_budget: int = 0,
    ) -> None:
        self.held, self.budget, self.part_budget = held, budget, part_budget
        self.blobs: list[bytes] = []
        self.offset = 0
        self.offers: list[Offer] = []
        self.parts = parts or {}
        self.token = token  # None: no part is offered
        self.part_offers: list[PartOffer] = []

    def ops(self, value: Ops) -> object:
        """A plan's root_ops: by token if the server holds this very tuple, else inline (and
        offered as a part when a token source and the budget allow); segmented ops, each
        segment so."""
        if isinstance(value, mounts.SegmentedOps):
            return {_SEGMENTS: [self.ops(segment) for segment in value.segments]}
        held = self.parts.get(id(value))
        if held is not None and held[1] is value:
            return {_PART: held[0]}
        inline = [self.json(v) for v in value]
        # Counted in ops, not bytes: measuring the JSON would cost a launch what it saves.
        if self.token is None or not value or len(value) > self.part_budget:
            return inline
        self.part_budget -= len(value)
        token = self.token()
        self.part_offers.append((token, len(value), value))
        return {_PART: token, _VALUE: inline}

    def blob(self, value: bytes, cacheable: bool) -> object:
        if cacheable and len(value) >= CACHED_MIN:
            # Daemon side only: hashlib loads OpenSSL, ~4 MB the fork server (and every
            # launcher it forks) would carry for nothing.
            import hashlib  # noqa: PLC0415

            digest = hashlib.sha256(value).hexdigest()
            if digest in self.held:
                return {_CACHED: digest}
            if len(value) <= self.budget and all(o[0] != digest for o in self.offers):
                self.budget -= len(value)
                self.offers.append((digest, self.offset, len(value)))
        self.blobs.append(value)
        self.offset += len(value)
        return {_BYTES: [self.offset - len(value), len(value)]}

    def json(self, value: object, cacheable: bool = False) -> object:
        if value is None or isinstance(value, str | int):  # bool is an int
            return value
        cls = type(value)
        names = _FIELDS.get(cls)
        if names is not None:
            out: dict[str, object] = {_TYPE: cls.__name__}
            for name in names:
                field = getattr(value, name)
                if cls is ChildPlan and name == "root_ops":
                    out[name] = self.ops(field)
                else:
                    out[name] = self.json(field, (cls, name) in CACHEABLE)
            return out
        if isinstance(value, bytes):
            return self.blob(value, cacheable)
        if isinstance(value, tuple | list):
            return [self.json(v) for v in value]
        raise TypeError(f"cannot encode {type(value).__name__} in a plan")


class _Decoder:
    def __init__(
        self,
        blobs: memoryview,
        cache: Mapping[str, bytes],
        parts: Mapping[str, Ops],
        keep: MutableMapping[str, Ops] | None = None,
        tokens: Container[str] = (),
    ) -> None:
        # `keep`: where the parts offered under one of `tokens` go (the fork server's side).
        self.blobs, self.cache, self.parts = blobs, cache, parts
        self.keep, self.tokens = keep, tokens

    def part(self, value: dict[str, object]) -> object:
        token = value[_PART]
        if not isinstance(token, str):
            raise TypeError(f"part token {token!r}")
        if _VALUE not in value:
            return self.parts[token]  # KeyError: the daemon named a part we never got
        ops = _from_json(value[_VALUE], self.blobs, self.cache, self)
        if not isinstance(ops, tuple):
            raise TypeError(f"part {token} is not a list")
        if self.keep is not None and token in self.tokens:
            self.keep[token] = ops
        return ops

    def segments(self, value: object) -> tuple[object, ...]:
        if not isinstance(value, list):
            raise TypeError(f"segments {value!r:.100}")
        ops: list[object] = []
        for segment in value:
            decoded = _from_json(segment, self.blobs, self.cache, self)
            if not isinstance(decoded, tuple):
                raise TypeError(f"a segment of root_ops is a {type(decoded).__name__}")
            ops += decoded
        return tuple(ops)


def _from_json(
    value: object, blobs: memoryview, cache: Mapping[str, bytes], dec: _Decoder
) -> object:
    if isinstance(value, list):
        return tuple(_from_json(v, blobs, cache, dec) for v in value)
    if isinstance(value, dict):
        if _PART in value:
            return dec.part(value)
        if _SEGMENTS in value:
            return dec.segments(value[_SEGMENTS])
        if _CACHED in value:
            return cache[value[_CACHED]]  # KeyError: the daemon named a blob we never got
        if _BYTES in value:
            start, length = value[_BYTES]
            if start < 0 or length < 0 or start + length > len(blobs):
                raise ValueError(f"blob {start}+{length} outside the {len(blobs)} bytes sent")
            return bytes(blobs[start : start + length])
        cls = _CLASSES[value.pop(_TYPE)]
        return cls(**{k: _from_json(v, blobs, cache, dec) for k, v in value.items()})
    return value


@dataclasses.dataclass(frozen=True)
class Encoded:
    body: bytes
    offers: list[Offer]  # new blobs for the server to keep
    parts: list[PartOffer]  # new op tuples for the server to keep decoded


def encode_for_server(
    plan: ChildPlan,
    held: Set[str],
    budget: int,
    *,
    parts: HeldParts | None = None,
    token: Callable[[], str] | None = None,
    part_budget: int = 0,
) -> Encoded:
    """The plan, naming the cacheable blobs in `held` by digest and its root_ops by token if
    `parts` holds that tuple; new blobs offered to the server to keep, `budget` bytes at most,
    and (given `token`, a source of fresh tokens) its root_ops, if there are at most
    `part_budget` of them: both travel inline this time."""
    enc = _Encoder(held, budget, parts, token, part_budget)
    doc = json.dumps(enc.json(plan), separators=(",", ":")).encode()
    body = b"".join((_LEN.pack(len(doc)), doc, *enc.blobs))
    return Encoded(body, enc.offers, enc.part_offers)


def encode_cached(plan: ChildPlan, held: Set[str], budget: int) -> tuple[bytes, list[Offer]]:
    """The plan, naming the cacheable blobs in `held` by digest; and the new ones offered to
    the server to keep, `budget` bytes at most (they travel inline this time)."""
    encoded = encode_for_server(plan, held, budget)
    return encoded.body, encoded.offers


def encode_plan(plan: ChildPlan) -> bytes:
    return encode_cached(plan, frozenset(), 0)[0]


def keep_offered(data: bytes, offers: list[Offer], cache: dict[str, bytes]) -> None:
    """The fork server's side: keep each offered blob of the plan in `data` under its digest
    (the daemon's, from these very bytes: the server does not hash them again); an offer
    outside the plan's blobs is a ProtocolError."""
    try:
        (size,) = _LEN.unpack_from(data)
        for digest, offset, length in offers:
            start = 4 + size + offset
            blob = data[start : start + length]
            if offset < 0 or len(blob) != length or not isinstance(digest, str):
                raise ProtocolError(f"{length} bytes of blobs at {offset}", f"{len(blob)}")
            cache[digest] = blob
    except (ValueError, TypeError, struct.error) as err:
        raise ProtocolError("offers of blobs", f"{offers!r:.200} ({err})") from None


def keep_parts(
    data: bytes,
    tokens: Container[str],
    cache: Mapping[str, bytes],
    parts: MutableMapping[str, Ops],
) -> None:
    """The fork server's side: decode the root_ops the plan in `data` offers under one of
    `tokens` and keep them in `parts`. Only they are decoded: nothing else of the plan (its
    credentials above all) is copied into the server. ProtocolError if they are not ops."""
    try:
        (size,) = _LEN.unpack_from(data)
        doc = json.loads(data[4 : 4 + size])
        value = doc.get("root_ops") if isinstance(doc, dict) else None
        offered = value.get(_SEGMENTS, [value]) if isinstance(value, dict) else []
        dec = _Decoder(memoryview(data)[4 + size :], cache, parts, parts, tokens)
        for part in offered if isinstance(offered, list) else ():
            if isinstance(part, dict) and _VALUE in part and part.get(_PART) in tokens:
                dec.part(part)
    except (ValueError, KeyError, TypeError, struct.error) as err:
        raise ProtocolError("a plan's root_ops", f"{type(err).__name__}: {err}") from None


def decode_plan(
    data: bytes,
    cache: Mapping[str, bytes] | None = None,
    parts: Mapping[str, Ops] | None = None,
    fds: Mapping[str, int] | None = None,
) -> ChildPlan:
    """The plan (its cached blobs from `cache`, the op tuples it names from `parts`), with the
    fd fields in `fds` (e.g. stdout_fd: where a spare received it) set instead of the sent
    ones; ProtocolError naming what arrived if not a plan.

    `fds` here rather than a dataclasses.replace after: that built the ~30-field plan twice,
    on pages of dataclasses' Field objects the spare had not written yet (copy-on-write faults
    on the launch's path)."""
    try:
        (size,) = _LEN.unpack_from(data)
        view = memoryview(data)
        blobs, cache = view[4 + size :], cache or {}
        dec = _Decoder(blobs, cache, parts or {})
        top = json.loads(data[4 : 4 + size])
        if fds:
            if not isinstance(top, dict):  # any other class is refused below, as without fds
                raise ValueError("fds for a value that is not an object")
            top.update(fds)
        plan = _from_json(top, blobs, cache, dec)
    except (ValueError, KeyError, TypeError, struct.error) as err:
        what = f"{data[:200]!r} ({type(err).__name__}: {err})"
        raise ProtocolError("a ChildPlan", what) from None
    if not isinstance(plan, ChildPlan):
        raise ProtocolError("a ChildPlan", type(plan).__name__)
    return plan
