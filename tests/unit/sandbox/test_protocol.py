"""The launch protocol's messages and reader (no root)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from supervisor.sandbox.wire.protocol import (
    ChildError,
    EnterRequest,
    Exited,
    Forked,
    ForkRequest,
    Hello,
    PidReport,
    ProtocolError,
    Reader,
    ServerError,
    Spare,
    StageFailure,
    Trace,
    Used,
    decode,
    encode,
    encode_server,
)


def test_messages_round_trip() -> None:
    for msg in (
        PidReport(42),
        ChildError("rootfs", 2, "bind /x on /y: No such file"),
        Trace(["unshare", "fork PID 1"], [10, 25]),
    ):
        assert decode(encode(msg).rstrip(b"\n")) == msg


def test_every_message_is_flat_so_its_fields_are_what_asdict_would_say() -> None:
    """encode and encode_server read a message's own fields, not dataclasses.asdict (whose
    deep copy a launcher paid on every launch): the same bytes, as long as no message holds
    another dataclass."""
    child = [PidReport(42), ChildError("a", 1, "b"), Exited(9, True), Trace(["x"], [1])]
    server = [
        Hello(1, 2),
        ForkRequest(5, [("d" * 64, 0, 10)], [("t1", 3)]),
        Used([("d" * 64, 0, 10)], [("t1", 3)]),
        EnterRequest(7, ["/bin/true"], ["/sys/fs/cgroup/x"], 1.5),
        Forked(3),
        Spare(0),
        ServerError(2, "no"),
    ]
    for msg in child + server:
        fields = dataclasses.fields(msg)
        assert not any(dataclasses.is_dataclass(getattr(msg, f.name)) for f in fields)
    for name, msg in zip(("pid", "error", "exited", "trace"), child, strict=True):
        wire = json.dumps({"kind": name, **dataclasses.asdict(msg)}).encode() + b"\n"
        assert encode(msg) == wire
    kinds = ("hello", "fork", "used", "enter", "forked", "spare", "server-error")
    for name, smsg in zip(kinds, server, strict=True):
        assert (
            encode_server(smsg) == json.dumps({"kind": name, **dataclasses.asdict(smsg)}).encode()
        )


def test_reader_splits_and_reassembles_messages() -> None:
    chunks = [encode(PidReport(7))[:5], encode(PidReport(7))[5:] + encode(ChildError("a", 1, "b"))]
    reader = Reader(lambda n: chunks.pop(0) if chunks else b"")
    assert reader.next() == PidReport(7)
    assert reader.next() == ChildError("a", 1, "b")
    assert reader.next() is None


def test_garbage_names_expected_and_received() -> None:
    expected = r"expected a PidReport, ChildError, Exited or Trace, received"
    with pytest.raises(ProtocolError, match=expected):
        decode(b'{"kind": "hello"}')
    chunks = [b"trunc"]
    reader = Reader(lambda n: chunks.pop(0) if chunks else b"")
    with pytest.raises(ProtocolError, match="expected a complete message, received b'trunc'"):
        reader.next()


def test_stage_failure_from_oserror() -> None:
    failure = StageFailure.from_oserror("workdir", "chdir /nope", FileNotFoundError(2, "No such"))
    assert failure.to_message() == ChildError("workdir", 2, "chdir /nope: No such")
