"""The launch protocol's messages and reader (no root)."""

from __future__ import annotations

import pytest

from supervisor.sandbox.wire.protocol import (
    ChildError,
    PidReport,
    ProtocolError,
    Reader,
    StageFailure,
    Trace,
    decode,
    encode,
)


def test_messages_round_trip() -> None:
    for msg in (
        PidReport(42),
        ChildError("rootfs", 2, "bind /x on /y: No such file"),
        Trace(["unshare", "fork PID 1"], [10, 25]),
    ):
        assert decode(encode(msg).rstrip(b"\n")) == msg


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
