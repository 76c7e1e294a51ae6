"""keep_fds: checked in the daemon, carried to the fork server, placed by the launcher (no root).

The placement is asserted on RecordingSyscalls with an fd table: which fd ends up under which
number, which ones an execve would hand over, and that nothing is overwritten before it moved.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import NoReturn

import pytest

from supervisor.errors import LaunchError
from supervisor.linux.fake import RecordingSyscalls
from supervisor.sandbox.child.stage import ChildFds, ChildPlan, make_way, place_fds, run_launcher
from supervisor.sandbox.host import hostlayout
from supervisor.sandbox.host.launch import LaunchRequest, build_plan
from supervisor.sandbox.wire.frames import recv_frame, send_frame
from supervisor.sandbox.wire.plancodec import decode_plan, encode_plan
from supervisor.sandbox.wire.protocol import (
    MAX_KEEP_FDS,
    ChildError,
    PidReport,
    ProtocolError,
    Reader,
)
from supervisor.unit.schema import UnitFile
from supervisor.unit.spec import UnitSpec

HOST = hostlayout.HostLayout(
    {
        "/usr": hostlayout.HostPath("dir"),
        "/mnt": hostlayout.HostPath("dir"),
        **{f"/dev/{d}": hostlayout.HostPath("other") for d in hostlayout.DEVICES},
    }
)
SPEC = UnitSpec("web", "/u/web.toml", UnitFile.model_validate({"service": {"exec": ["/bin/app"]}}))
IDS = (0, 1 << 20, 65536)  # the range the daemon gives a default unit (its user namespace)


class Exited(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def fake_exit(code: int) -> NoReturn:
    raise Exited(code)


def plan(keep: tuple[int, ...], stdout: int = 1, stderr: int = 2) -> ChildPlan:
    base = build_plan(
        LaunchRequest(SPEC, ["/cg/pids/web/cgroup.procs"], stdout, stderr, id_map=IDS), HOST
    )
    return replace(base, keep_fds=keep)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


# --- validation (daemon side) --------------------------------------------------------------


def request(keep: list[int], stdout: int, stderr: int) -> LaunchRequest:
    return LaunchRequest(SPEC, [], stdout, stderr, keep_fds=keep, id_map=IDS)


def test_kept_fds_go_into_the_plan_and_through_the_codec(pipe: tuple[int, int]) -> None:
    r, w = pipe
    built = build_plan(request([r], w, w), HOST)
    assert built.keep_fds == (r,)
    assert decode_plan(encode_plan(built)).keep_fds == (r,)
    assert build_plan(LaunchRequest(SPEC, [], w, w, id_map=IDS), HOST).keep_fds == ()


@pytest.mark.parametrize(
    ("keep", "needle"),
    [
        ([2], "keep_fds: fd 2 is a standard stream"),
        ([0], "keep_fds: fd 0 is a standard stream"),
        (["W"], "keep_fds: fd W is the service's stdout/stderr"),
        (["R", "R"], "keep_fds: fd R is listed twice"),
        ([987654], "keep_fds: fd 987654: Bad file descriptor"),
        ([True], "keep_fds: True is not an fd number"),
    ],
)
def test_bad_keep_fds_are_a_plan_error(
    pipe: tuple[int, int], keep: list[int | str], needle: str
) -> None:
    r, w = pipe
    numbers = {"R": r, "W": w}
    fds = [numbers[k] if isinstance(k, str) else k for k in keep]
    with pytest.raises(LaunchError) as info:
        build_plan(request(fds, w, w), HOST)
    assert info.value.stage == "plan"
    assert needle.replace("R", str(r)).replace("W", str(w)) in info.value.message


def test_at_most_max_keep_fds(pipe: tuple[int, int]) -> None:
    r, w = pipe
    dups = [os.dup(r) for _ in range(MAX_KEEP_FDS + 1)]
    try:
        with pytest.raises(LaunchError, match=f"at most {MAX_KEEP_FDS} fds, got 17"):
            build_plan(request(dups, w, w), HOST)
        assert build_plan(request(dups[:MAX_KEEP_FDS], w, w), HOST).keep_fds == tuple(dups[:-1])
    finally:
        for fd in dups:
            os.close(fd)


# --- placement (launcher side) -------------------------------------------------------------


def test_direct_fork_numbers_move_up_and_back_so_they_lose_close_on_exec() -> None:
    # After a direct fork the kept fd is already on its number, but close-on-exec (the daemon's
    # pipe2(O_CLOEXEC)): dup2(n, n) would not clear that, a copy back does.
    table = {5: "sync", 6: "go", 8: "log-w", 9: "log-r", 10: "control.sock"}
    sys = RecordingSyscalls(fd_table=dict(table), cloexec=set(table))
    p, fds = make_way(plan((9,), 8, 8), ChildFds(5, 6, (9,)), sys)
    place_fds(p, fds, sys)
    assert sys.calls == [
        ("dup_above", 9, 10),
        ("dup_to", 11, 9),
        ("close_fds_except", [5, 6, 8, 9]),
    ]
    assert (fds.sync_w, fds.go_r, p.stdout_fd) == (5, 6, 8), "no collision: nothing else moved"
    assert sys.fd_table == {5: "sync", 6: "go", 8: "log-w", 9: "log-r"}
    assert sys.inherited() == {9: "log-r"}


def test_fork_server_numbers_collide_and_everything_lands_where_planned() -> None:
    # What SCM_RIGHTS gives a spare launcher: sync, go, stdout, stderr, then the kept fds at
    # the lowest free numbers; the planned numbers are the daemon's, here chosen to collide
    # with sync (3), with a kept fd itself (7) and with another kept fd's number (8 <-> 7).
    table = {3: "sync", 4: "go", 5: "out", 6: "err", 7: "A", 8: "B", 9: "C"}
    sys = RecordingSyscalls(fd_table=table, cloexec=set(table))  # `table` is updated in place
    planned = (8, 3, 7)  # A -> 8, B -> 3, C -> 7
    p, fds = make_way(plan(planned, 5, 6), ChildFds(3, 4, (7, 8, 9)), sys)
    names = sys.names()
    assert set(names) == {"dup_above"}, "make_way only copies: nothing closed or overwritten"
    assert {c[2] for c in sys.calls} == {10}, "moved above every number in play"
    moved = {c[1] for c in sys.calls}
    assert moved == {3, 7, 8}, "exactly the fds sitting on a planned number"
    assert fds.sync_w >= 10 and table[fds.sync_w] == "sync"
    assert (fds.go_r, p.stdout_fd, p.stderr_fd) == (4, 5, 6)
    place_fds(p, fds, sys)
    names = sys.names()
    assert names[-1] == "close_fds_except" and names.count("dup_to") == 3
    sources = {c[1] for c in sys.calls if c[0] == "dup_to"}
    assert not sources & set(planned), "copied from where it is safe, never a planned number"
    assert sys.inherited() == {8: "A", 3: "B", 7: "C"}
    held = {table[fd] for fd in (fds.sync_w, fds.go_r, p.stdout_fd, p.stderr_fd)}
    assert held == {"sync", "go", "out", "err"}
    assert sorted(table) == sorted({8, 3, 7, fds.sync_w, 4, 5, 6})
    # PID 1 then sets up stdio: the service gets exactly stdio and the kept fds.
    sys.setup_stdio(p.stdout_fd, p.stderr_fd)
    assert sys.inherited() == {0: "/dev/null", 1: "out", 2: "err", 8: "A", 3: "B", 7: "C"}


def test_without_keep_fds_only_the_sweep_runs() -> None:
    sys = RecordingSyscalls()
    p, fds = make_way(plan(()), ChildFds(5, 6), sys)
    place_fds(p, fds, sys)
    assert sys.calls == [("close_fds_except", [1, 2, 5, 6])]


def messages(fd: int) -> list[PidReport | ChildError]:
    reader = Reader(lambda n: os.read(fd, n) if select.select([fd], [], [], 0)[0] else b"")
    out = []
    while (msg := reader.next()) is not None:
        out.append(msg)
    return out


@pytest.fixture
def sync() -> Iterator[tuple[int, int, int]]:
    sync_r, sync_w = os.pipe()
    go_r = os.open("/dev/null", os.O_RDONLY)
    yield sync_r, sync_w, go_r
    for fd in (sync_r, sync_w, go_r):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_launcher_places_fds_before_joining_the_cgroup(sync: tuple[int, int, int]) -> None:
    sync_r, sync_w, go_r = sync
    high = 1000  # an fd the fake pretends to hold; never touched for real
    sys = RecordingSyscalls(fork_result=99)
    with pytest.raises(Exited) as ex:
        run_launcher(plan((high,)), ChildFds(sync_w, go_r, (high,)), sys, fake_exit)
    assert ex.value.code == 0
    names = sys.names()
    # Then the user namespace and the held sources (holding.py), the unshare, PID 1's fork,
    # lo up and the sysctls (stage.net_setup), and (after the report) the holding mount
    # namespace let go.
    assert names[:5] == ["reset_signals", "dup_above", "dup_to", "close_fds_except", "write_file"]
    tail = ["unshare", "open_path", "fork", "link_up", "write_file", "close", "close"]
    assert names[5] == "make_userns" and names[-7:] == tail
    assert sys.calls[3] == ("close_fds_except", sorted({1, 2, sync_w, go_r, high}))
    assert messages(sync_r) == [PidReport(99)]


def test_a_failed_move_is_reported_on_the_untouched_sync_pipe(sync: tuple[int, int, int]) -> None:
    sync_r, sync_w, go_r = sync
    sys = RecordingSyscalls(fail={"dup_above": 24})
    with pytest.raises(Exited) as ex:
        run_launcher(plan((1000,)), ChildFds(sync_w, go_r, (1000,)), sys, fake_exit)
    assert ex.value.code == 1
    assert "close_fds_except" not in sys.names() and "unshare" not in sys.names()
    [msg] = messages(sync_r)
    assert isinstance(msg, ChildError) and (msg.stage, msg.errno) == ("fds", 24)
    assert msg.message.startswith("move fd 1000 to ")


def test_kept_fds_that_did_not_arrive_fail_the_launch(sync: tuple[int, int, int]) -> None:
    sync_r, sync_w, go_r = sync
    sys = RecordingSyscalls()
    with pytest.raises(Exited):
        run_launcher(plan((1000, 1001)), ChildFds(sync_w, go_r, (1000,)), sys, fake_exit)
    [msg] = messages(sync_r)
    assert msg == ChildError("fds", 0, "1 fds for 2 keep_fds")


# --- the wire to the fork server -----------------------------------------------------------


def test_a_frame_carries_stdio_and_max_keep_fds_but_not_more() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    null = os.open("/dev/null", os.O_RDONLY)
    try:
        send_frame(a, b"h", b"", [null] * (4 + MAX_KEEP_FDS))
        frame = recv_frame(b)
        assert frame is not None and len(frame[2]) == 4 + MAX_KEEP_FDS
        for fd in frame[2]:
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
            os.close(fd)
        send_frame(a, b"h", b"", [null] * (5 + MAX_KEEP_FDS))
        with pytest.raises(ProtocolError, match=f"at most {4 + MAX_KEEP_FDS} fds"):
            recv_frame(b)
    finally:
        os.close(null)
        a.close()
        b.close()
