"""The fork server as the daemon uses it: who owns the sandboxes, and what happens when it dies.

The launch behaviour itself (namespaces, root, privileges, errors) is proven through the server
by test_launch.py and test_escape.py, which run every test on both paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from supervisor.errors import LaunchError
from supervisor.linux import helduserns
from supervisor.sandbox.host.forkserver import ForkServer, ForkServerError
from supervisor.sandbox.host.launch import LaunchRequest, build_plan, launch, launch_async
from supervisor.sandbox.wire.frames import recv_frame, send_frame
from supervisor.sandbox.wire.plancodec import encode_plan
from supervisor.sandbox.wire.protocol import (
    MAX_KEEP_FDS,
    ChildError,
    Forked,
    ForkRequest,
    Reader,
    ServerError,
    Used,
    decode_server,
    encode_server,
)
from tests.support import harness

pytestmark = harness.LAUNCH_MARKS


@pytest.fixture
def server() -> Iterator[ForkServer]:
    harness.set_subreaper()
    srv = ForkServer.start()
    try:
        with harness.through(srv):
            yield srv
    finally:
        srv.close()


def status_field(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/status").read_text().split(f"{name}:")[1].split()[0]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: reaped mid-read
        return False


def wait_dead(pid: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"{pid} still alive"
        time.sleep(0.01)


def test_the_server_is_small_and_loads_no_daemon_libraries(server: ForkServer) -> None:
    rss_kb = int(status_field(server.pid, "VmRSS"))
    assert rss_kb < 24 * 1024, f"fork server RSS {rss_kb} kB"
    maps = Path(f"/proc/{server.pid}/maps").read_text()
    for lib in ("pydantic", "aiohttp", "pyroute2", "structlog", "seccomp", "libcrypto"):
        assert lib not in maps, lib
    assert int(status_field(server.pid, "Threads")) == 1
    assert int(status_field(server.pid, "PPid")) == os.getpid()


def test_pid1_is_a_child_of_the_daemon_not_of_the_server(server: ForkServer) -> None:
    out = os.open("/dev/null", os.O_WRONLY)
    with harness.v1_cgroup() as procs:
        launched = launch(
            LaunchRequest(
                harness.unit(["/bin/sleep", "30"]), procs, out, out, id_map=harness.ID_MAP
            ),
            server=server,
        )
        try:
            launched.go()
            ppid = int(status_field(launched.pid, "PPid"))
            assert ppid == os.getpid() != server.pid
            # Ours to reap (pidfd/waitpid), as the engine does.
            os.kill(launched.pid, signal.SIGKILL)
            _, status = os.waitpid(launched.pid, 0)
            assert os.WTERMSIG(status) == signal.SIGKILL
        finally:
            os.close(out)

    # The server reaped its launcher: what is left under it is the next spare launcher, alive.
    def children() -> list[str]:
        return Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()

    deadline = time.monotonic() + 2
    while len(children()) > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(children()) == 1 and alive(int(children()[0]))


def our_children() -> set[int]:
    me = os.getpid()
    return {int(p) for p in Path(f"/proc/{me}/task/{me}/children").read_text().split()}


def socket_inodes(pid: int) -> set[str]:
    """The sockets among `pid`'s open fds; a fd closed while they are listed is left out (a
    service may open and close one, as coreutils opens the locale archive after its exec)."""
    fds = Path(f"/proc/{pid}/fd")
    links = set()
    for name in os.listdir(fds):
        with contextlib.suppress(FileNotFoundError):
            links.add(os.readlink(fds / name))
    return {link for link in links if link.startswith("socket:")}


def test_pid1_holds_no_fd_of_a_spares_channel(server: ForkServer) -> None:
    # The daemon holds each idle spare's channel and sends a launch over it: neither it nor
    # the server's socket may reach the sandbox, or its root could hand itself the next
    # sandbox's launch (or read its plan and fds).
    assert server.spare_pid > 0  # the launch goes over the channel the daemon holds
    out = os.open("/dev/null", os.O_WRONLY)
    with harness.v1_cgroup() as procs:
        spec = harness.unit(["/bin/sleep", "30"])
        launched = launch(
            LaunchRequest(spec, procs, out, out, id_map=harness.id_map_for(spec)), server=server
        )
        try:
            launched.go()
            assert socket_inodes(launched.pid) == set()  # no socket at all: none of ours
        finally:
            os.close(out)
            os.kill(launched.pid, signal.SIGKILL)
            os.waitpid(launched.pid, 0)


def test_a_dead_server_is_restarted_before_the_next_launch(server: ForkServer) -> None:
    first, spare = server.pid, server.spare_pid
    assert spare > 0
    os.kill(first, signal.SIGKILL)
    wait_dead(first)
    res = harness.run(harness.unit(["/bin/sh", "-c", "echo ok"]))
    assert res.stdout == b"ok\n"
    assert server.pid != first and server.alive()
    assert server.restarts == 1
    assert server.last_exit == -signal.SIGKILL
    # Its spare launcher died with it (pdeathsig), re-parented to us and was reaped.
    assert not Path(f"/proc/{spare}").exists()


def test_a_killed_spare_launcher_is_replaced(server: ForkServer) -> None:
    # Dead before the request comes (one killed mid-request fails that launch, as a killed
    # launcher does on the direct path).
    os.kill(server.spare_pid, signal.SIGKILL)
    wait_dead(server.spare_pid)
    assert harness.run(harness.unit(["/bin/true"])).exit_code == 0
    assert server.restarts == 0


def test_a_plan_the_launcher_cannot_read_is_a_forkserver_error(server: ForkServer) -> None:
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_WRONLY)
    try:
        send_frame(
            server._sock, encode_server(ForkRequest(4)), b"garbage", [sync_w, go_r, null, null]
        )
        for fd in (sync_w, go_r, null):
            os.close(fd)
        frame = recv_frame(server._sock)
        assert frame is not None
        forked = decode_server(frame[0], (Forked,))
        os.close(frame[2][0])
        msg = Reader(lambda n: os.read(sync_r, n)).next()
    finally:
        os.close(sync_r)
        os.close(go_w)
    assert isinstance(msg, ChildError) and msg.stage == "forkserver", msg
    assert "expected a ChildPlan" in msg.message
    assert forked.pid not in our_children()


def spareless(server: ForkServer) -> None:
    """Drop the daemon's idle spare (it exits at EOF on its channel): the next launch is a
    ForkRequest to the server, answered by it."""
    server._drop_spare(reap=False)
    assert server.spare_pid == 0


def test_a_server_dying_during_a_launch_fails_it_with_stage_forkserver(server: ForkServer) -> None:
    spareless(server)
    # Stopped, the server cannot answer; the timer kills it while launch() waits for the reply.
    os.kill(server.pid, signal.SIGSTOP)
    victim = server.pid
    old = signal.signal(signal.SIGALRM, lambda *_: os.kill(victim, signal.SIGKILL))
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(LaunchError) as info:
            harness.run(harness.unit(["/bin/true"]))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert info.value.stage == "forkserver"
    assert "died during the launch" in info.value.message
    assert harness.run(harness.unit(["/bin/true"])).exit_code == 0, "restarted"
    assert server.restarts == 1


def launch_true(server: ForkServer, timeout: float) -> None:
    spec = harness.unit(["/bin/true"])
    out = os.open("/dev/null", os.O_WRONLY)
    try:
        launched = launch(
            LaunchRequest(spec, [], out, out, timeout=timeout, id_map=harness.id_map_for(spec)),
            server=server,
        )
    finally:
        os.close(out)
    launched.go()
    _, status = os.waitpid(launched.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_hung_server_times_out_and_is_replaced(server: ForkServer) -> None:
    spareless(server)
    os.kill(server.pid, signal.SIGSTOP)
    with pytest.raises(LaunchError) as info:
        launch_true(server, timeout=0.3)
    assert (info.value.stage, info.value.message) == (
        "forkserver",
        "the fork server did not answer in time",
    )
    # Dead to us at once, though SIGKILL may not have landed yet: the next request restarts
    # it rather than writing to the dying one (which answered it with EOF).
    assert not server.alive()
    assert harness.run(harness.unit(["/bin/true"])).exit_code == 0
    assert server.restarts == 1


def test_a_launch_goes_to_the_held_spare_without_the_server(server: ForkServer) -> None:
    # The daemon hands the plan to the spare itself: a stopped server holds up no launch that
    # has a spare, only the one after it, which waits for the next spare until its deadline.
    spare = server.spare_pid
    os.kill(server.pid, signal.SIGSTOP)
    launch_true(server, timeout=30)
    assert not alive(spare) and server.spare_pid == 0
    with pytest.raises(LaunchError) as info:
        launch_true(server, timeout=0.3)
    assert (info.value.stage, info.value.message) == (
        "forkserver",
        "the fork server sent no spare in time",
    )
    assert not server.alive()
    assert harness.run(harness.unit(["/bin/true"])).exit_code == 0
    assert server.restarts == 1


def test_a_server_that_cannot_be_restarted_is_a_clear_launch_error(
    server: ForkServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.kill(server.pid, signal.SIGKILL)
    wait_dead(server.pid)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with pytest.raises(LaunchError) as info:
        harness.run(harness.unit(["/bin/true"]))
    assert info.value.stage == "forkserver"
    assert "cannot start /nonexistent/python" in info.value.message
    monkeypatch.undo()
    assert harness.run(harness.unit(["/bin/true"])).exit_code == 0


def test_start_failure_is_a_fork_server_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with pytest.raises(ForkServerError, match="fork server: cannot start /nonexistent/python"):
        ForkServer.start()


def test_a_used_the_server_cannot_keep_ends_it_and_the_next_launch_restarts_it(
    server: ForkServer,
) -> None:
    # Nobody answers a Used, and the daemon counts its offers as kept: a server that cannot
    # keep them exits (killing the spare whose channel we hold), and a new one holds nothing.
    first, spare = server.pid, server.spare_pid
    send_frame(server._sock, encode_server(Used([("0" * 64, 0, 999)])), b"\0\0\0\0")
    wait_dead(first)
    wait_dead(spare)
    assert harness.run(harness.unit(["/bin/true"])).exit_code == 0
    assert server.pid != first and server.restarts == 1 and server.last_exit == 1


def test_a_used_with_fds_is_a_server_error(server: ForkServer) -> None:
    r, w = os.pipe()
    try:
        send_frame(server._sock, encode_server(Used()), b"", [r, w])
        frame = recv_frame(server._sock)
    finally:
        os.close(r)
        os.close(w)
    assert frame is not None
    assert "expected no fds, received 2" in decode_server(frame[0], (ServerError,)).message
    assert harness.run(harness.unit(["/bin/true"])).exit_code == 0, "still serving"


def test_a_bad_request_is_answered_with_a_server_error(server: ForkServer) -> None:
    r, w = os.pipe()
    try:
        send_frame(server._sock, encode_server(ForkRequest(4)), b"{}", [r, w])
        frame = recv_frame(server._sock)
    finally:
        os.close(r)
        os.close(w)
    assert frame is not None
    reply = decode_server(frame[0], (ServerError,))
    assert "expected 4 fds, received 2" in reply.message
    assert harness.run(harness.unit(["/bin/true"])).exit_code == 0, "still serving"


DAEMON = r"""
import os, sys, time
from supervisor.sandbox.host.forkserver import ForkServer
server = ForkServer.start()
print(server.pid, flush=True)
time.sleep(60)
"""


def test_the_server_dies_with_the_daemon() -> None:
    harness.set_subreaper()  # the dead server re-parents to us: ours to reap
    daemon = subprocess.Popen(
        [sys.executable, "-c", DAEMON], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    assert daemon.stdout is not None
    pid = int(daemon.stdout.readline())
    try:
        assert alive(pid)
        daemon.kill()  # a crash: no close(), no EOF handling, just gone
        daemon.wait()
        wait_dead(pid)  # PR_SET_PDEATHSIG
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def test_close_stops_the_server_and_leaves_us_no_children() -> None:
    harness.set_subreaper()
    before = our_children()
    srv = ForkServer.start()
    pid = srv.pid
    srv.close()
    assert not alive(pid)
    assert srv._proc.returncode == 0
    assert our_children() == before, "the server reaped its spare before exiting"


def test_a_request_announcing_too_many_fds_is_a_server_error(server: ForkServer) -> None:
    r, w = os.pipe()
    try:
        send_frame(server._sock, encode_server(ForkRequest(5 + MAX_KEEP_FDS)), b"{}", [r, w])
        frame = recv_frame(server._sock)
    finally:
        os.close(r)
        os.close(w)
    assert frame is not None
    reply = decode_server(frame[0], (ServerError,))
    most = 4 + MAX_KEEP_FDS
    assert f"expected 4 to {most} fds, received {most + 1} announced" in reply.message
    assert harness.run(harness.unit(["/bin/true"])).exit_code == 0, "still serving"


def test_kept_fds_missing_from_a_request_fail_it_on_the_sync_pipe(server: ForkServer) -> None:
    # The plan asks PID 1 to keep a fd, the frame carries none: the launcher must not guess.
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_WRONLY)
    plan = build_plan(
        LaunchRequest(harness.unit(["/bin/true"]), [], null, null, id_map=harness.ID_MAP)
    )
    body = encode_plan(replace(plan, keep_fds=(50,)))
    try:
        send_frame(server._sock, encode_server(ForkRequest(4)), body, [sync_w, go_r, null, null])
        for fd in (sync_w, go_r, null):
            os.close(fd)
        frame = recv_frame(server._sock)
        assert frame is not None
        decode_server(frame[0], (Forked,))
        os.close(frame[2][0])
        msg = Reader(lambda n: os.read(sync_r, n)).next()
    finally:
        os.close(sync_r)
        os.close(go_w)
    assert msg == ChildError("forkserver", 0, "launch protocol: expected 1 kept fds, received 0")


TRACED_STAGES = [
    "daemon: launch called",
    "daemon: plan built",
    "daemon: plan encoded",
    "daemon: request sent to the spare",
    "forkserver: request received by the spare",
    "forkserver: plan decoded",
    "launcher: fds placed",
    "launcher: cgroup joined",
    "launcher: user namespace made, sources held",
    "launcher: unshared",
    "launcher: PID 1 forked",
    "launcher: lo up, sysctls",
    "daemon: PID 1 reported",
    "daemon: Go sent",
    "PID 1: scheduled, setsid",
    "PID 1: userns root",
    "PID 1: root built (mounts, pivot_root)",
    "PID 1: hostname, rlimits, stdio",
    "PID 1: identity, credentials",
    "PID 1: privileges dropped, env",
    "PID 1: Go received, ready to exec",
    "daemon: exec observed (EOF on the sync pipe)",
]


def traced_run(request: LaunchRequest, server: ForkServer | None) -> list[tuple[str, int]]:
    with harness.v1_cgroup() as procs:
        launched = launch(replace(request, cgroup_procs=procs), server=server)
        launched.go()
        _, status = os.waitpid(launched.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return launched.trace


def test_a_traced_launch_times_every_stage_in_order(server: ForkServer) -> None:
    out = os.open("/dev/null", os.O_WRONLY)
    try:
        spec = harness.unit(["/bin/true"])  # a default unit: its own user namespace
        request = LaunchRequest(spec, [], out, out, id_map=harness.id_map_for(spec), trace=True)
        stamps = traced_run(request, server)
        assert [stage for stage, _ in stamps] == TRACED_STAGES
        # One clock for the daemon, the launcher and PID 1: each side's stamps are in order,
        # and the launch's causal steps too (PID 1 builds while the daemon sends Go). Across
        # processes only a stamp taken before an action precedes one taken where it is seen:
        # "request sent" and "PID 1 forked" are stamped after the send and the fork return,
        # which the other side may beat.
        at = dict(stamps)
        for side in ("daemon", "forkserver", "launcher", "PID 1"):
            times = [ns for stage, ns in stamps if stage.startswith(side)]
            assert times == sorted(times), side
        chain = ["daemon: plan encoded", "forkserver: plan decoded",
                 "launcher: unshared", "PID 1: scheduled, setsid",
                 "PID 1: Go received, ready to exec",
                 "daemon: exec observed (EOF on the sync pipe)"]  # fmt: skip
        assert [at[s] for s in chain] == sorted(at[s] for s in chain)
        assert at["daemon: Go sent"] <= at["PID 1: Go received, ready to exec"]
        # Without a fork server there is no request to send and none to decode.
        direct = [stage for stage, _ in traced_run(request, None)]
        assert direct == [
            s for s in TRACED_STAGES if not any(w in s for w in ("spare", "forkserver", "encoded"))
        ]
        # Untraced (the default): no stamp anywhere.
        assert traced_run(replace(request, trace=False), server) == []
    finally:
        os.close(out)


def test_a_spare_warmed_with_the_last_plan_runs_the_next_one(server: ForkServer) -> None:
    # Each spare after the first decodes the previous request's plan while it waits (to take
    # its copy-on-write faults early): what it runs is still the request it is handed.
    first = harness.run(harness.unit(["/bin/sh", "-c", "echo one"], name="one"))
    second = harness.run(
        harness.unit(["/bin/sh", "-c", "echo two $K"], name="two", service={"env": {"K": "v"}})
    )
    assert (first.stdout, second.stdout) == (b"one\n", b"two v\n")


def test_recurring_blobs_are_kept_by_the_server_and_named_after(server: ForkServer) -> None:
    spec = harness.unit(["/bin/sh", "-c", "echo ok"])
    plan = build_plan(LaunchRequest(spec, [], 1, 2, id_map=harness.ID_MAP))
    assert plan.privileges.seccomp_bpf is not None
    assert harness.run(spec).stdout == b"ok\n"
    held = set(server._held)  # the seccomp program, offered with the first request
    assert held and server._held_bytes >= len(plan.privileges.seccomp_bpf)
    # The next launches name it by digest, and the spare (forked after) resolves it.
    for _ in range(2):
        assert harness.run(spec).stdout == b"ok\n"
    assert server._held == held
    # A restarted server keeps nothing: the daemon offers again what it named.
    os.kill(server.pid, signal.SIGKILL)
    wait_dead(server.pid)
    assert harness.run(spec).stdout == b"ok\n"
    assert server.restarts == 1 and server._held == held


# A host root's ops travel in three parts: before its own /etc/hostname and /etc/hosts, those,
# and after (mounts.SegmentedOps).
SEGMENTS = 3


def test_a_units_root_ops_are_kept_decoded_by_the_server_and_named_after(
    server: ForkServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "f").write_text("one\n")
    mounts = {"mounts": [{"source": str(data), "target": "/data"}]}
    spec = harness.unit(["/bin/cat", "/data/f"], name="parts", sandbox=mounts)
    assert harness.run(spec).stdout == b"one\n"
    # This unit's root ops, offered with the first request: in three segments, the middle one
    # its own /etc/hostname and /etc/hosts (plancache.py).
    parts = dict(server._parts)
    assert len(parts) == SEGMENTS
    # The next launches name them by token; the spare, forked after, holds them decoded.
    (data / "f").write_text("two\n")
    assert harness.run(spec).stdout == b"two\n"
    assert server._parts == parts
    # A unit differing by its hostname alone shares the segments around its own files.
    other = harness.unit(["/bin/cat", "/etc/hostname"], name="parts-b", sandbox=mounts)
    assert harness.run(other).stdout == b"parts-b\n"
    assert len(server._parts) == SEGMENTS + 1
    assert harness.run(spec).stdout == b"two\n"
    assert len(server._parts) == SEGMENTS + 1
    # The host changed under the unit (the source is now a file): planned, and offered, anew.
    (data / "f").unlink()
    data.rmdir()
    data.write_text("a file now\n")
    data.chmod(0o644)
    file_spec = harness.unit(["/bin/cat", "/data"], name="parts", sandbox=mounts)
    assert harness.run(file_spec).stdout == b"a file now\n"
    assert len(server._parts) == 2 * SEGMENTS + 1
    # A restarted server keeps nothing: the daemon offers them again.
    os.kill(server.pid, signal.SIGKILL)
    wait_dead(server.pid)
    assert harness.run(file_spec).stdout == b"a file now\n"
    assert server.restarts == 1 and len(server._parts) == SEGMENTS


def test_the_launcher_joins_v1_cgroups_through_tasks_and_pid1_is_in_them(
    server: ForkServer,
) -> None:
    out = os.open("/dev/null", os.O_WRONLY)
    try:
        with harness.v1_cgroup() as procs:
            request = LaunchRequest(
                harness.unit(["/bin/sleep", "30"]), procs, out, out, id_map=harness.ID_MAP
            )
            assert build_plan(request).cgroup_procs == tuple(
                p.removesuffix("cgroup.procs") + "tasks" for p in procs
            )
            launched = launch(request, server=server)
            try:
                launched.go()
                for path in procs:  # the whole process, and what it forks, not one thread
                    assert str(launched.pid) in Path(path).read_text().split()
            finally:
                os.kill(launched.pid, signal.SIGKILL)
                os.waitpid(launched.pid, 0)
    finally:
        os.close(out)


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def test_awaited_launches_are_in_flight_at_once(server: ForkServer) -> None:
    """What the daemon does in a storm: several launches through one server, each awaited on
    the loop (the server's answer, the launcher's report, the exec), all running in the end."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        out = os.open("/dev/null", os.O_WRONLY)
        pids: list[int] = []
        try:
            with harness.v1_cgroup() as procs:
                try:
                    reqs = [
                        LaunchRequest(harness.unit(["/bin/sleep", "30"], name=f"u{i}"), procs,
                                      out, out, id_map=harness.ID_MAP)
                        for i in range(4)
                    ]  # fmt: skip
                    launched = await asyncio.gather(*(launch_async(r, server) for r in reqs))
                    pids = [one.pid for one in launched]
                    await asyncio.gather(*(one.go_async(loop) for one in launched))
                    assert len(set(pids)) == 4
                    for pid in pids:
                        assert alive(pid) and int(status_field(pid, "PPid")) == os.getpid()
                finally:
                    _kill_all(pids)
        finally:
            os.close(out)

    asyncio.run(main())


def test_awaited_launches_keep_a_units_root_ops_then_name_them(server: ForkServer) -> None:
    """The daemon's path (fork_async): what the server kept is recorded once it answered."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        out = os.open("/dev/null", os.O_WRONLY)
        kept = []
        try:
            spec = harness.unit(["/bin/true"], name="again")
            for _ in range(3):
                with harness.v1_cgroup() as procs:
                    req = LaunchRequest(spec, procs, out, out, id_map=harness.ID_MAP)
                    one = await launch_async(req, server)
                    try:
                        await one.go_async(loop)
                    finally:
                        _, status = os.waitpid(one.pid, 0)
                    assert status == 0
                kept.append(dict(server._parts))
        finally:
            os.close(out)
        assert len(kept[0]) == SEGMENTS and kept[0] == kept[1] == kept[2]

    asyncio.run(main())


@contextlib.contextmanager
def _sleepers() -> Iterator[tuple[Callable[[str], LaunchRequest], list[int]]]:
    """Requests for units that sleep 30 s, in one v1 cgroup, and a list for the PIDs launched
    from them: each is killed and reaped at the end."""
    out = os.open("/dev/null", os.O_WRONLY)
    pids: list[int] = []
    try:
        with harness.v1_cgroup() as procs:

            def req(name: str) -> LaunchRequest:
                spec = harness.unit(["/bin/sleep", "30"], name=name)
                return LaunchRequest(spec, procs, out, out, id_map=harness.ID_MAP)

            try:
                yield req, pids
            finally:
                _kill_all(pids)
    finally:
        os.close(out)


def test_a_synchronous_request_reads_an_awaited_forks_answer_first(server: ForkServer) -> None:
    """The answers carry no request id: a blocking request (a probe's enter) sent while an
    awaited fork waits takes that fork's answer off the socket and hands it over, and a
    cancelled fork's answer is dropped, never taken for the next request's."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with _sleepers() as (req, pids):
            spareless(server)  # a ForkRequest, answered by the server
            awaited = asyncio.create_task(launch_async(req("a"), server))
            while server._pending is None:  # sent, its answer not read yet
                await asyncio.sleep(0)
            blocking = launch(req("b"), server=server)  # blocks the loop, as a probe
            first = await awaited
            pids += [first.pid, blocking.pid]
            await first.go_async(loop)
            blocking.go()
            assert first.pid != blocking.pid and alive(first.pid) and alive(blocking.pid)

            spareless(server)
            cancelled = asyncio.create_task(launch_async(req("c"), server))
            while server._pending is None:
                await asyncio.sleep(0)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            after = await launch_async(req("d"), server)
            pids.append(after.pid)
            await after.go_async(loop)
            assert alive(after.pid) and after.pid not in pids[:-1]

    asyncio.run(main())


def test_a_synchronous_launch_takes_the_spare_an_awaited_one_waits_for(server: ForkServer) -> None:
    """After a launch handed to the spare, the next awaits the server's Spare notice; a blocking
    launch meanwhile reads that notice, uses the spare itself and wakes the awaited one, which
    then waits for the spare after it."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with _sleepers() as (req, pids):
            os.kill(server.pid, signal.SIGSTOP)  # no Spare notice until it continues
            first = await launch_async(req("a"), server)
            pids.append(first.pid)
            awaited = asyncio.create_task(launch_async(req("b"), server))
            while server._spare_waiter is None:
                await asyncio.sleep(0)
            os.kill(server.pid, signal.SIGCONT)
            blocking = launch(req("c"), server=server)  # blocks the loop, as a probe
            pids.append(blocking.pid)
            second = await awaited
            pids.append(second.pid)
            for one in (first, second):
                await one.go_async(loop)
            blocking.go()
            assert len(set(pids)) == 3 and all(alive(pid) for pid in pids)
            assert server.restarts == 0

    asyncio.run(main())


def _fd_stats(pid: int) -> list[os.stat_result]:
    """What `pid`'s open fds refer to; a fd closed while they are listed is left out."""
    out = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            out.append(os.stat(f"/proc/{pid}/fd/{name}"))
    return out


def test_launchers_join_the_held_namespace_through_the_holders_root_and_pid1_holds_none(
    tmp_path: Path,
) -> None:
    """A server given the holder's root (as the daemon's is) hands it to every launcher: the
    launches of a range all join the one namespace held for it, and neither PID 1 nor the
    service it execs holds that fd (a way into the holder, which a sandbox's root could use
    to reach other ranges' namespaces): the launcher closes it before PID 1's fork."""
    directory = str(tmp_path / "userns")
    holder = helduserns.Holder.open(directory)
    _, base, size = harness.ID_MAP
    held = helduserns.path_for(directory, base, size)
    harness.set_subreaper()
    srv = ForkServer.start(holder=holder.shared())
    out = os.open("/dev/null", os.O_WRONLY)
    spec = harness.unit(["/bin/sleep", "30"])
    pids: list[int] = []
    try:
        # The server keeps it (close-on-exec: no exec probe command gets it).
        server_fds = Path(f"/proc/{srv.pid}/fd")
        assert any(
            os.path.samestat(os.stat(server_fds / n), os.fstat(holder.root))
            for n in os.listdir(server_fds)
        )
        with harness.v1_cgroup() as procs:
            for _ in range(2):
                request = LaunchRequest(
                    spec, procs, out, out, id_map=harness.ID_MAP, userns_file=held
                )
                launched = launch(request, server=srv)
                pids.append(launched.pid)
                launched.go()
                # Not an exact list: the service (coreutils sleep) opens and closes the locale
                # archive right after its exec, a fd that may or may not be there yet.
                assert not any(
                    os.path.samestat(st, os.fstat(holder.root)) for st in _fd_stats(launched.pid)
                )
            ns = holder.open_ns(os.path.basename(held))
            assert ns is not None
            inode = os.fstat(ns).st_ino
            os.close(ns)
            assert [os.stat(f"/proc/{pid}/ns/user").st_ino for pid in pids] == [inode] * 2
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            pids.clear()
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(out)
        srv.close()
        holder.destroy()
