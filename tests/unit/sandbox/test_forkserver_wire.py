"""What travels to the fork server: the plan codec, its messages and frames (no root)."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import socket
from collections.abc import Iterator

import pytest

from supervisor.sandbox.child.stage import ChildPlan
from supervisor.sandbox.host import hostlayout
from supervisor.sandbox.host.launch import LaunchRequest, build_plan
from supervisor.sandbox.wire import mounts
from supervisor.sandbox.wire.frames import recv_frame, send_frame
from supervisor.sandbox.wire.plancodec import (
    Ops,
    decode_plan,
    encode_cached,
    encode_for_server,
    encode_plan,
    keep_offered,
    keep_parts,
)
from supervisor.sandbox.wire.protocol import (
    Forked,
    ForkRequest,
    Hello,
    ProtocolError,
    ServerError,
    Spare,
    Used,
    decode_server,
    encode_server,
)
from supervisor.unit.schema import UnitFile
from supervisor.unit.spec import UnitSpec

HOST = hostlayout.HostLayout(
    {
        "/usr": hostlayout.HostPath("dir"),
        "/mnt": hostlayout.HostPath("dir"),
        "/etc/passwd": hostlayout.HostPath("file", data=b"root:x:0:0::/root:/bin/sh\n"),
        "/etc/ld.so.cache": hostlayout.HostPath("file", data=bytes(range(256)) * 400),
        **{f"/dev/{d}": hostlayout.HostPath("other") for d in hostlayout.DEVICES},
    }
)


def plan_for(**sections: dict[str, object]) -> ChildPlan:
    data: dict[str, object] = {"service": {"exec": ["/bin/app", "--flag"]}, **sections}
    spec = UnitSpec("web", "/u/web.toml", UnitFile.model_validate(data))
    ids = (0, 1 << 20, 65536)  # a user namespace's range, as the daemon gives each unit one
    return build_plan(LaunchRequest(spec, ["/cg/pids/web/cgroup.procs"], 5, 6, id_map=ids), HOST)


@pytest.mark.parametrize(
    "sections",
    [
        {},
        {"security": {"seccomp": "unconfined", "capabilities": []}},
        {"sandbox": {"namespaces": ["pid", "mount", "net", "user"], "mounts": [{"type": "tmpfs",
                     "target": "/scratch", "size": "1M"}]}, "service": {"exec": ["/x"],
                     "env": {"A": "1"}, "group": "root"}},
    ],
)  # fmt: skip
def test_plans_round_trip_exactly(sections: dict[str, dict[str, object]]) -> None:
    plan = plan_for(**sections)
    assert decode_plan(encode_plan(plan)) == plan


def test_a_spare_decodes_the_plan_with_the_fds_it_received_in_place_of_the_sent_ones() -> None:
    plan = plan_for()
    got = decode_plan(encode_plan(plan), fds={"stdout_fd": 41, "stderr_fd": 42})
    assert got == dataclasses.replace(plan, stdout_fd=41, stderr_fd=42)
    with pytest.raises(ProtocolError):  # a field the plan does not have
        decode_plan(encode_plan(plan), fds={"no_such_fd": 3})


def test_bytes_travel_raw_after_the_json() -> None:
    plan = plan_for(sandbox={"read_only": False})  # a writable root gets /etc copied in
    data = encode_plan(plan)
    blob = bytes(range(256)) * 400
    assert blob in data, "not base64: a memcpy, not an encoding"
    writes = [op for op in decode_plan(data).root_ops if isinstance(op, mounts.WriteFile)]
    assert any(op.data == blob for op in writes)


def test_a_write_inside_the_root_travels_with_its_bytes_and_mode() -> None:
    op = mounts.WriteInRoot("/mnt", "/etc/resolv.conf", b"nameserver 192.0.2.53\n", 0o644)
    plan = dataclasses.replace(plan_for(), root_ops=(op, mounts.PivotRoot("/mnt")))
    assert decode_plan(encode_plan(plan)).root_ops == (op, mounts.PivotRoot("/mnt"))


def test_recurring_blobs_travel_once_then_by_digest() -> None:
    big = bytes(range(256)) * 400  # /etc/ld.so.cache
    secret = b"s" * 4096
    # A writable root gets /etc copied in (a read-only one binds the host's large files).
    writable = plan_for(sandbox={"read_only": False})
    plan = dataclasses.replace(writable, credentials=(("token", secret),))
    assert plan.privileges.seccomp_bpf is not None
    first, offers = encode_cached(plan, frozenset(), 1 << 20)
    # The seccomp program and the /etc copy are offered; a credential never is.
    sizes = sorted(length for _, _, length in offers)
    assert sizes == sorted([len(big), len(plan.privileges.seccomp_bpf)])
    cache: dict[str, bytes] = {}
    keep_offered(first, offers, cache)  # the fork server's side
    assert sorted(cache.values(), key=len) == sorted([big, plan.privileges.seccomp_bpf], key=len)
    assert decode_plan(first) == plan  # offered blobs still travel inline this time
    second, again = encode_cached(plan, set(cache), 1 << 20)
    assert again == [] and big not in second and secret in second
    assert len(second) < len(first) - len(big)
    assert decode_plan(second, cache) == plan
    with pytest.raises(ProtocolError, match="expected a ChildPlan"):
        decode_plan(second)  # a server that was never offered them


def flat(plan: ChildPlan) -> ChildPlan:
    """`plan` with its root_ops in one tuple, not in segments (mounts.SegmentedOps)."""
    return dataclasses.replace(plan, root_ops=tuple(plan.root_ops))


def test_a_plans_root_ops_travel_once_then_by_token() -> None:
    plan = flat(plan_for(sandbox={"read_only": False}))  # with /etc copies among its ops
    tokens = iter(["p0", "p1"])
    first = encode_for_server(
        plan, frozenset(), 1 << 20, token=lambda: next(tokens), part_budget=1 << 20
    )
    assert [(t, ops) for t, _, ops in first.parts] == [("p0", plan.root_ops)]
    kept: dict[str, Ops] = {}
    cache: dict[str, bytes] = {}
    keep_offered(first.body, first.offers, cache)
    # The fork server's side: it decodes the ops it was offered once, and keeps them.
    keep_parts(first.body, {"p0"}, cache, kept)
    assert kept == {"p0": plan.root_ops}
    with pytest.raises(ProtocolError, match="root_ops"):
        keep_parts(first.body[:4] + b"[" + first.body[5:], {"p0"}, cache, {})
    assert decode_plan(first.body) == plan  # offered ops still travel inline this time
    held = {id(plan.root_ops): ("p0", plan.root_ops)}
    second = encode_for_server(plan, set(cache), 1 << 20, parts=held, token=lambda: next(tokens))
    assert second.parts == [] and len(second.body) < len(first.body) // 2
    assert decode_plan(second.body, cache, dict(kept)) == plan
    with pytest.raises(ProtocolError, match="expected a ChildPlan"):
        decode_plan(second.body, cache)  # a server that was never offered them
    # Equal ops in another tuple (a plan rebuilt, or replaced by hand) travel inline: a token
    # names one tuple, never contents that merely compare equal.
    rebuilt = dataclasses.replace(plan, root_ops=tuple(plan.root_ops[:-1]) + plan.root_ops[-1:])
    third = encode_for_server(rebuilt, set(cache), 1 << 20, parts=held)
    assert third.parts == [] and decode_plan(third.body, cache) == rebuilt


def test_the_parts_budget_bounds_what_is_offered() -> None:
    plan = flat(plan_for())
    budget = len(plan.root_ops) - 1
    encoded = encode_for_server(plan, frozenset(), 1 << 20, token=lambda: "p0", part_budget=budget)
    assert encoded.parts == []
    assert decode_plan(encoded.body) == plan


def test_units_differing_by_hostname_share_their_root_ops_but_their_own_files() -> None:
    """plancache.py gives such units segmented root_ops whose first and last segments are the
    same tuples: each travels once as a part, and later plans name them by token, the own
    /etc/hostname and /etc/hosts inline; the server keeps the parts decoded and the plan
    arrives whole."""
    plans = [plan_for(sandbox={"read_only": False, "hostname": h}) for h in ("a1", "b2")]
    first_ops, second_ops = (p.root_ops for p in plans)
    assert isinstance(first_ops, mounts.SegmentedOps)
    assert isinstance(second_ops, mounts.SegmentedOps)
    shared = first_ops.segments[::2]  # before and after the own files
    assert all(x is y for x, y in zip(shared, second_ops.segments[::2], strict=True))
    tokens = iter(["p0", "p1", "p2", "p3"])
    first = encode_for_server(
        plans[0], frozenset(), 1 << 20, token=lambda: next(tokens), part_budget=1 << 20
    )
    assert [ops for _, _, ops in first.parts] == list(first_ops.segments)
    cache: dict[str, bytes] = {}
    kept: dict[str, Ops] = {}
    keep_offered(first.body, first.offers, cache)
    keep_parts(first.body, {t for t, _, _ in first.parts}, cache, kept)
    assert [kept[t] for t, _, _ in first.parts] == list(first_ops.segments)
    assert decode_plan(first.body) == plans[0]
    held = {id(ops): (t, ops) for t, _, ops in first.parts}
    second = encode_for_server(plans[1], set(cache), 1 << 20, parts=held)
    assert second.parts == [] and len(second.body) < len(first.body) // 2
    decoded = decode_plan(second.body, cache, kept)
    assert decoded == plans[1] and type(decoded.root_ops) is tuple
    files = {op.path: op.data for op in decoded.root_ops if isinstance(op, mounts.WriteFile)}
    assert any(data == b"b2\n" for data in files.values())
    assert not any(b"a1" in data for data in files.values())


def test_the_blob_budget_bounds_what_is_offered() -> None:
    _, offers = encode_cached(plan_for(), frozenset(), 0)
    assert offers == []


def test_an_offer_outside_the_plans_blobs_is_refused() -> None:
    data, offers = encode_cached(plan_for(), frozenset(), 1 << 20)
    digest, offset, length = offers[-1]
    cache: dict[str, bytes] = {}
    with pytest.raises(ProtocolError, match="bytes of blobs"):
        keep_offered(data, [(digest, offset + 1, length)], cache)
    with pytest.raises(ProtocolError, match="offers of blobs"):
        keep_offered(data, [("x",)], cache)  # type: ignore[list-item]
    assert cache == {}


def test_only_plan_classes_are_accepted() -> None:
    doc = b'{"@t":"Popen","args":"/bin/sh"}'
    with pytest.raises(ProtocolError, match="expected a ChildPlan"):
        decode_plan(len(doc).to_bytes(4, "big") + doc)
    doc = b'{"@t":"WriteFile","path":"/x","data":{"@b":[0,99]}}'
    with pytest.raises(ProtocolError, match="outside the 0 bytes sent"):
        decode_plan(len(doc).to_bytes(4, "big") + doc)
    doc = b'{"@t":"WriteFile","path":"/x","data":null}'
    with pytest.raises(ProtocolError, match="received WriteFile"):
        decode_plan(len(doc).to_bytes(4, "big") + doc)


def test_server_messages_round_trip_and_name_the_unexpected() -> None:
    for msg in (
        Hello(1, 2),
        ForkRequest(4),
        Used(),
        Forked(77),
        Spare(78),
        ServerError(11, "again"),
    ):
        assert decode_server(encode_server(msg), (type(msg),)) == msg
    with pytest.raises(ProtocolError, match="expected Forked or ServerError, received Hello"):
        decode_server(encode_server(Hello(1, 2)), (Forked, ServerError))
    with pytest.raises(ProtocolError, match="expected ForkRequest, received b'nope'"):
        decode_server(b"nope", (ForkRequest,))


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def test_frames_carry_fds_close_on_exec(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    r, w = os.pipe()
    os.set_inheritable(w, True)
    send_frame(a, b"head", b"body", [r, w])
    os.close(r)
    os.close(w)
    frame = recv_frame(b)
    assert frame is not None
    header, body, fds = frame
    assert (header, body, len(fds)) == (b"head", b"body", 2)
    for fd in fds:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC, "no leak into an exec"
    os.write(fds[1], b"x")
    assert os.read(fds[0], 1) == b"x"
    for fd in fds:
        os.close(fd)


def test_a_large_body_arrives_whole(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    body = os.urandom(1 << 20)  # far beyond the socket buffer: sent in pieces
    pid = os.fork()
    if pid == 0:  # a writer that blocks until the reader drains
        try:
            send_frame(a, b"h", body)
        finally:
            os._exit(0)
    frame = recv_frame(b)
    os.waitpid(pid, 0)
    assert frame is not None and frame[1] == body


def test_eof_and_truncation(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(b"\x00\x00\x00\x05\x00\x00\x00\x00ab")
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(ProtocolError, match="expected 5 bytes, received EOF after 2"):
        recv_frame(b)
    assert recv_frame(b) is None


def test_a_spare_warms_with_the_last_plan_only_while_its_request_has_not_come(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An idle spare decodes the last plan ahead (its copy-on-write faults off the launch's
    path); one whose request is already waiting decodes that instead: a warm decode before it
    would be the same work twice, on the launch's path."""
    from supervisor.sandbox.server import serverloop  # noqa: PLC0415

    decoded: list[bytes] = []
    monkeypatch.setattr(serverloop, "decode_plan", lambda data, *_: decoded.append(data))
    last = encode_plan(plan_for())
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert serverloop._warm(theirs, last, {}, {}) and decoded == [last]
        assert not serverloop._warm(theirs, b"", {}, {})  # the first spare: nothing to warm
        send_frame(ours, b"", last)  # the request has come
        assert not serverloop._warm(theirs, last, {}, {}) and decoded == [last]
        assert recv_frame(theirs) == (b"", last, [])  # left for the spare to read
