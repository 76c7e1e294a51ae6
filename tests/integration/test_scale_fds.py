"""The daemon at scale: fds above FD_SETSIZE, and a fixed number of fds per sandbox.

The daemon holds a few fds per running sandbox (engine/run.py: FDS_PER_RUN), so with a raised
RLIMIT_NOFILE a few hundred sandboxes put every new fd above 1024, where select(2) stops
working. These tests launch with the caller's fds already past that line, through the fork
server as the daemon does, and count what N launches leave open.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import glob
import os
import resource
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor import cgroups
from supervisor.config import DaemonConfig
from supervisor.engine import logwriter
from supervisor.engine.output import RotatingLog
from supervisor.engine.run import Begun, Host, Run, fds_per_run
from supervisor.errors import LaunchError
from supervisor.sandbox.host.adapters import SandboxLauncher, SandboxNetwork
from supervisor.sandbox.host.forkserver import ForkServer
from supervisor.sandbox.host.launch import LaunchRequest, launch
from tests.support import harness

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, cgroups)"),
    pytest.mark.skipif(not harness.v1_available(), reason="needs cgroup v1 memory+pids"),
]

FD_SETSIZE = 1024


def _noop() -> None:
    pass


# The fork server of the `engine` fixture: the fds it holds for its idle spare are one spare's
# at a time but change numbers with every launch, so the counts below leave them out.
_SERVER: list[ForkServer] = []


def open_fds() -> list[int]:
    spare = {fd for server in _SERVER for fd in server.spare_fds()}
    listed = [int(fd) for fd in os.listdir("/proc/self/fd")]
    # Without the fd that listed them (closed by now): the lowest free one, whose number
    # moves with the spare's.
    return sorted(fd for fd in listed if fd not in spare and _is_open(fd))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def fds_above_setsize(extra: int = FD_SETSIZE + 64) -> Iterator[None]:
    """Raise the soft RLIMIT_NOFILE (as the daemon does) and fill the fd table past 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, 4096)
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} < {want}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    held: list[int] = []
    try:
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        held.append(null)
        while len(held) < extra:
            held.append(os.dup(null))
        assert max(held) >= FD_SETSIZE
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_fork_server_launches_with_every_fd_above_1024() -> None:
    """The server's socket, the launcher's pidfd, the sync and go pipes and the output pipe
    all land above FD_SETSIZE: every wait must be poll(), not select()."""
    harness.set_subreaper()
    with fds_above_setsize():
        server = ForkServer.start()
        # Its spare's fds are left out of the counts (open_fds): whether a spare is held when
        # `before` is counted depends on whether the last launch's Spare notice was read yet,
        # and a restarted server comes with one.
        _SERVER.append(server)
        try:
            for _ in range(3):
                read_fd, out = os.pipe2(os.O_CLOEXEC)
                assert min(read_fd, out) >= FD_SETSIZE
                with harness.v1_cgroup() as procs:
                    req = LaunchRequest(
                        harness.unit(["/bin/echo", "hi"]), procs, out, out, id_map=harness.ID_MAP
                    )
                    launched = launch(req, server=server)
                    os.close(out)
                    launched.go()
                    _, status = os.waitpid(launched.pid, 0)
                    assert os.waitstatus_to_exitcode(status) == 0
                    assert os.read(read_fd, 100) == b"hi\n"
                    os.close(read_fd)
            before = len(open_fds())
            # A dead server is replaced, and its spare launcher reaped with a pidfd > 1024.
            os.kill(server.pid, signal.SIGKILL)
            server.ensure()
            assert len(open_fds()) == before
        finally:
            _SERVER.remove(server)
            server.close()


@pytest.fixture
def engine() -> Iterator[tuple[Host, Path]]:
    """What the daemon hands its runs: the loop, a cgroup manager, the fork server."""
    harness.set_subreaper()
    parent = f"sandboxd-test-scale-{os.getpid()}"
    manager = cgroups.new(parent)
    loop = asyncio.new_event_loop()
    data = Path(tempfile.mkdtemp(prefix="sbx-scale-", dir="/tmp"))
    server = ForkServer.start()
    _SERVER.append(server)
    try:
        network = SandboxNetwork(DaemonConfig(data_dir=data, state_dir=data / "state"))
        # As the unit runner does: a default unit launches with its range (here the harness's).
        launcher = functools.partial(
            SandboxLauncher(data, network, server), userns=harness.ID_MAP[1:]
        )
        yield Host(loop, manager, launcher), data
    finally:
        _SERVER.remove(server)
        server.close()
        loop.close()
        for unit in manager.list_units():
            cg = manager.open(unit)
            if cg is not None:
                cg.destroy()
        for d in glob.glob(f"/sys/fs/cgroup/*/{parent}"):
            if not os.path.islink(os.path.dirname(d)):  # co-mounted cpu -> cpu,cpuacct
                os.rmdir(d)
        for path in sorted(data.rglob("*"), reverse=True):
            path.unlink() if not path.is_dir() else path.rmdir()
        data.rmdir()


def test_n_runs_hold_a_fixed_number_of_fds_each_and_give_them_back(
    engine: tuple[Host, Path],
) -> None:
    host, data = engine
    n = 12
    runs: list[Run] = []
    with fds_above_setsize():  # as in a daemon with a few hundred sandboxes already
        before = open_fds()
        try:
            for i in range(n):
                spec = harness.unit(["/bin/sh", "-c", "echo up; exec sleep 60"], name=f"u{i}")
                sink = RotatingLog(data / f"u{i}.log", None, 1)
                runs.append(host.loop.run_until_complete(Run.launch(host, spec, sink, _noop)))
            # Let every service write its line: the log file is the last fd a run opens.
            deadline = host.loop.time() + 10
            while not all((data / f"u{i}.log").exists() for i in range(n)):
                assert host.loop.time() < deadline, "services did not write their output"
                host.loop.run_until_complete(asyncio.sleep(0.02))
            host.loop.run_until_complete(asyncio.sleep(0.05))
            assert logwriter.WRITER.flush(30)  # the log files are opened on the writer thread
            during = open_fds()
            # Plus the writer thread's staging pipe: once per daemon, not per run.
            expected = n * fds_per_run(host.cgroups) + logwriter.FDS
            assert len(during) - len(before) == expected, [
                os.readlink(f"/proc/self/fd/{fd}") for fd in set(during) - set(before)
            ]
        finally:
            for run in runs:
                run.kill_all()
            deadline = host.loop.time() + 10
            while not all(run.ended for run in runs) and host.loop.time() < deadline:
                host.loop.run_until_complete(asyncio.sleep(0.02))
            for run in runs:
                run.finish()
        assert all(run.status is not None for run in runs)
        assert logwriter.WRITER.stop(30)  # the runs' last closes, and the staging pipe
        assert open_fds() == before


def test_a_begun_launch_waits_for_go_and_its_abort_gives_everything_back(
    engine: tuple[Host, Path],
) -> None:
    """A launch stopped at "PID 1 waits for Go" (Begun: the restart path prepares one ahead)
    never execs while it waits, however long, and its abort leaves no process, no cgroup and
    no fd; a second one, let go after the wait, runs the service as a plain launch does."""
    host, data = engine
    spec = harness.unit(["/bin/sh", "-c", "echo ran; exec sleep 60"], name="begun")
    with fds_above_setsize():
        before = open_fds()
        sink = RotatingLog(data / "begun.log", None, 1)
        begun = host.loop.run_until_complete(Begun.begin(host, spec, sink))
        try:
            pid = begun.pid
            # Past a launch's whole timeout would prove nothing more: PID 1 blocks in read(2)
            # on the go pipe, which no deadline ends. A few loop turns let it get there.
            host.loop.run_until_complete(asyncio.sleep(0.2))
            assert not (data / "begun.log").exists()  # the service never ran
            assert host.cgroups.open("begun") is not None
        finally:
            begun.abort()
        begun.abort()  # again: a no-op
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped
        assert host.cgroups.open("begun") is None
        with pytest.raises(LaunchError):
            host.loop.run_until_complete(begun.go(_noop))
        assert logwriter.WRITER.stop(30)  # its staging pipe (once per daemon, not per run)
        extra = set(open_fds()) - set(before)
        assert not extra, [os.readlink(f"/proc/self/fd/{fd}") for fd in extra]

        begun = host.loop.run_until_complete(Begun.begin(host, spec, sink))
        host.loop.run_until_complete(asyncio.sleep(0.2))
        run = host.loop.run_until_complete(begun.go(_noop))
        try:
            log_file, deadline = data / "begun.log", host.loop.time() + 10
            while not (log_file.exists() and log_file.read_text() == "ran\n"):
                assert host.loop.time() < deadline, "the service did not write its output"
                host.loop.run_until_complete(asyncio.sleep(0.02))
        finally:
            run.kill_all()
            deadline = host.loop.time() + 10
            while not run.ended and host.loop.time() < deadline:
                host.loop.run_until_complete(asyncio.sleep(0.02))
            run.finish()
        assert run.status is not None
        assert logwriter.WRITER.stop(30)
        assert open_fds() == before
