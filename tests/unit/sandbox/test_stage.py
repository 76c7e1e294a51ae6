"""The children's order of operations, asserted with RecordingSyscalls (no root, no fork)."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import select
from collections.abc import Iterator
from dataclasses import replace
from typing import NoReturn

import pytest

from supervisor.linux.fake import RecordingSyscalls
from supervisor.linux.syscalls import (
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    PR_CAPBSET_DROP,
    PR_SET_NO_NEW_PRIVS,
)
from supervisor.sandbox.child.stage import ChildFds, ChildPlan, run_launcher, run_pid1
from supervisor.sandbox.host import hostlayout
from supervisor.sandbox.host.launch import LaunchRequest, build_plan
from supervisor.sandbox.wire.protocol import GO, ChildError, PidReport, Reader
from supervisor.unit.schema import UnitFile
from supervisor.unit.spec import UnitSpec

HOST = hostlayout.HostLayout(
    {
        "/usr": hostlayout.HostPath("dir"),
        "/mnt": hostlayout.HostPath("dir"),
        **{f"/dev/{d}": hostlayout.HostPath("other") for d in hostlayout.DEVICES},
    }
)
IDS = (0, 1 << 20, 65536)  # the range the daemon gives a default unit (its user namespace)


class Exited(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def fake_exit(code: int) -> NoReturn:
    raise Exited(code)


def plan_for(**sections: dict[str, object]) -> ChildPlan:
    data: dict[str, object] = {"service": {"exec": ["/bin/app", "--flag"]}, **sections}
    spec = UnitSpec("web", "/u/web.toml", UnitFile.model_validate(data))
    return build_plan(
        LaunchRequest(
            spec,
            ["/cg/memory/web/cgroup.procs", "/cg/pids/web/cgroup.procs"],
            1,
            2,
            id_map=IDS,
        ),
        HOST,
    )


@pytest.fixture
def pipes() -> Iterator[tuple[ChildFds, int, int]]:
    sync_r, sync_w = os.pipe()
    go_r, go_w = os.pipe()
    yield ChildFds(sync_w, go_r), sync_r, go_w
    for fd in (sync_r, sync_w, go_r, go_w):
        with contextlib.suppress(OSError):
            os.close(fd)


def messages(fd: int) -> list[object]:
    os.set_blocking(fd, False)
    out = []
    reader = Reader(lambda n: os.read(fd, n) if _readable(fd) else b"")
    while (msg := reader.next()) is not None:
        out.append(msg)
    return out


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_launcher_joins_cgroups_then_unshares_then_forks(pipes: tuple[ChildFds, int, int]) -> None:
    fds, sync_r, _ = pipes
    sys = RecordingSyscalls(fork_result=777)
    with pytest.raises(Exited) as ex:
        run_launcher(plan_for(sandbox={"user_namespace": "host"}), fds, sys, fake_exit)
    assert ex.value.code == 0
    # lo is brought up and the sysctls written by the launcher, after the fork (PID 1 builds
    # meanwhile) and before the PID report, so before Go.
    assert sys.names() == [
        "reset_signals", "close_fds_except", "write_file", "write_file", "unshare",
        "open_path", "fork", "link_up", "write_file", "close",
    ]  # fmt: skip
    # Relative to /proc/sys opened before the fork: PID 1's pivot_root moves the launcher's
    # root too (it shares PID 1's mount namespace), onto the sandbox's read-only /proc/sys.
    assert sys.calls[5] == ("open_path", "/proc/sys")
    assert sys.calls[-2][:2] == ("write_file", "net/ipv4/ping_group_range")
    assert sys.calls[-2][3] == sys.calls[-1][1]
    assert sys.calls[2] == ("write_file", "/cg/memory/web/cgroup.procs", b"0")
    flags = sys.calls[4][1]
    assert isinstance(flags, int) and flags & CLONE_NEWPID and flags & CLONE_NEWNS
    assert flags & CLONE_NEWNET
    assert messages(sync_r) == [PidReport(777)]


def test_a_launcher_in_a_user_namespace_makes_it_and_holds_the_sources_before_unsharing(
    pipes: tuple[ChildFds, int, int],
) -> None:
    fds, sync_r, _ = pipes
    sys = RecordingSyscalls(fork_result=777)
    with pytest.raises(Exited) as ex:
        run_launcher(plan_for(), fds, sys, fake_exit)
    assert ex.value.code == 0
    names = sys.names()
    assert names[:5] == ["reset_signals", "close_fds_except", "write_file", "write_file",
                         "make_userns"]  # fmt: skip
    assert names[-7:] == ["unshare", "open_path", "fork", "link_up", "write_file", "close", "close"]
    assert "setns" in names
    flags = sys.calls[-7][1]
    assert isinstance(flags, int) and flags & CLONE_NEWPID and not flags & CLONE_NEWUSER
    # The holding mount namespace (holding.py, step 5) is let go once PID 1 is reported.
    assert ("open_own_ns", "mnt") in sys.calls
    assert sys.calls[-1] == ("close", 101)  # the fake's fds: 100 the userns, 101 this one
    assert messages(sync_r) == [PidReport(777)]


def test_launcher_reports_a_loopback_failure_after_killing_pid1(
    pipes: tuple[ChildFds, int, int],
) -> None:
    # PID 1 already exists when lo fails: it must not be left waiting for a Go that never
    # comes, and the daemon must hear the failure instead of a PID.
    fds, sync_r, _ = pipes
    sys = RecordingSyscalls(fork_result=777, fail={"link_up": errno.EPERM})
    with pytest.raises(Exited) as ex:
        run_launcher(plan_for(sandbox={"user_namespace": "host"}), fds, sys, fake_exit)
    assert ex.value.code == 1
    assert sys.names()[-4:] == ["fork", "link_up", "kill_child", "close"]  # then /proc/sys's
    assert sys.calls[-2] == ("kill_child", 777)
    [msg] = messages(sync_r)
    assert isinstance(msg, ChildError) and msg.stage == "network" and msg.errno == errno.EPERM


def test_launcher_reports_a_sysctl_failure_after_killing_pid1(
    pipes: tuple[ChildFds, int, int],
) -> None:
    # The sysctls are the launcher's now (stage.net_setup), written after PID 1's fork: a
    # refused one must end PID 1 and reach the daemon as the sysctl stage, as in PID 1 before.
    fds, sync_r, _ = pipes
    sys = RecordingSyscalls(fork_result=777)
    real_write = sys.write_file

    def write_file(path: str, data: bytes, create: bool = True, dir_fd: int | None = None) -> None:
        if dir_fd is not None:
            raise OSError(errno.EACCES, "refused", path)
        real_write(path, data, create, dir_fd)

    sys.write_file = write_file  # type: ignore[method-assign]
    with pytest.raises(Exited) as ex:
        run_launcher(plan_for(), fds, sys, fake_exit)
    assert ex.value.code == 1
    assert sys.names()[-4:] == ["fork", "link_up", "kill_child", "close"]
    assert sys.calls[-2] == ("kill_child", 777)
    [msg] = messages(sync_r)
    assert isinstance(msg, ChildError) and msg.stage == "sysctl" and msg.errno == errno.EACCES
    assert "net/ipv4/ping_group_range" in msg.message


def test_a_spares_own_proc_sys_takes_the_sysctls_and_never_reaches_pid1(
    pipes: tuple[ChildFds, int, int],
) -> None:
    # The spare's procfs instance (Syscalls.fresh_proc_sys, fd 50 here): the sysctls go
    # through it, the host's /proc/sys is not opened, and PID 1's branch would close it.
    fds, sync_r, _ = pipes
    sys = RecordingSyscalls(fork_result=777)
    with pytest.raises(Exited):
        run_launcher(plan_for(), dataclasses.replace(fds, proc_sys=50), sys, fake_exit)
    assert ("open_path", "/proc/sys") not in sys.calls
    assert ("write_file", "net/ipv4/ping_group_range", b"0 65535", 50) in sys.calls
    assert 50 in sys.calls[1][1]  # kept by the fd sweep, then closed after the write
    assert sys.calls[-2:] == [("close", 50), ("close", 101)]
    assert messages(sync_r) == [PidReport(777)]


def test_a_spares_proc_sys_is_closed_before_the_fork_when_the_plan_has_no_sysctls(
    pipes: tuple[ChildFds, int, int],
) -> None:
    fds, _, _ = pipes
    sys = RecordingSyscalls(fork_result=777)
    plan = dataclasses.replace(plan_for(), sysctls=())
    with pytest.raises(Exited):
        run_launcher(plan, dataclasses.replace(fds, proc_sys=50), sys, fake_exit)
    names = sys.names()
    assert names.index("fork") > sys.calls.index(("close", 50))


def test_a_spares_launcher_does_not_reset_the_signals_it_reset_while_waiting(
    pipes: tuple[ChildFds, int, int],
) -> None:
    fds, sync_r, _ = pipes
    sys = RecordingSyscalls(fork_result=777)
    with pytest.raises(Exited):
        run_launcher(plan_for(), fds, sys, fake_exit, signals_reset=True)
    assert "reset_signals" not in sys.names() and messages(sync_r) == [PidReport(777)]


def test_pid1_leaves_lo_and_the_sysctls_to_the_launcher(pipes: tuple[ChildFds, int, int]) -> None:
    fds, _, go_w = pipes
    os.write(go_w, GO)
    sys = RecordingSyscalls(files={"/etc/passwd": b"root:x:0:0::/root:/bin/sh\n"})
    with pytest.raises(Exited):
        run_pid1(plan_for(), fds, sys, fake_exit)
    assert "execve" in sys.names() and "link_up" not in sys.names()
    assert not [c for c in sys.calls if c[0] == "write_file" and "ping_group_range" in str(c[1])]


def test_launcher_reports_a_cgroup_failure_and_never_unshares(
    pipes: tuple[ChildFds, int, int],
) -> None:
    fds, sync_r, _ = pipes
    sys = RecordingSyscalls(fail={"write_file": 2})
    with pytest.raises(Exited) as ex:
        run_launcher(plan_for(), fds, sys, fake_exit)
    assert ex.value.code == 1
    assert "unshare" not in sys.names()
    [msg] = messages(sync_r)
    assert isinstance(msg, ChildError) and msg.stage == "cgroup" and msg.errno == 2


def test_pid1_waits_for_go_then_root_identity_privileges_exec(
    pipes: tuple[ChildFds, int, int],
) -> None:
    fds, _, go_w = pipes
    os.write(go_w, GO)
    sys = RecordingSyscalls(files={"/etc/passwd": b"root:x:0:0::/root:/bin/sh\n"})
    with pytest.raises(Exited):  # the fake's execve raises; the stage reports and exits
        run_pid1(plan_for(service={"exec": ["/bin/app"], "env": {"K": "v"}}), fds, sys, fake_exit)
    names = sys.names()
    # The default unit has a user namespace: PID 1 first becomes its root (setgroups,
    # setresgid, setresuid to 0), then builds the root; the service's identity comes after.
    assert names.index("setresuid") < names.index("pivot_root")
    stdio = names.index("setup_stdio")
    order = [
        names.index("setsid"),
        names.index("pivot_root"),
        names.index("sethostname"),
        stdio,
        names.index("setgroups", stdio),
        names.index("capset"),
        names.index("chdir", names.index("capset")),
        names.index("seccomp_load"),
        names.index("execve"),
    ]
    assert order == sorted(order)
    drops = [c for c in sys.calls if c[:2] == ("prctl", PR_CAPBSET_DROP)]
    first_drop = sys.calls.index(drops[0])
    assert drops and first_drop < names.index("setgroups", stdio), "bounding set first"
    nnp = sys.calls.index(("prctl", PR_SET_NO_NEW_PRIVS, 1, 0))
    assert nnp < names.index("seccomp_load"), "no_new_privs before the filter"
    execve = next(c for c in sys.calls if c[0] == "execve")
    assert execve[1:3] == ("/bin/app", ["/bin/app"])
    env = execve[3]
    assert isinstance(env, dict) and env["K"] == "v" and env["HOSTNAME"] == "web"


def test_pid1_without_no_new_privs_loads_seccomp_before_dropping_privileges(
    pipes: tuple[ChildFds, int, int],
) -> None:
    fds, _, go_w = pipes
    os.write(go_w, GO)
    sys = RecordingSyscalls(files={"/etc/passwd": b"root:x:0:0::/root:/bin/sh\n"})
    with pytest.raises(Exited):
        run_pid1(plan_for(security={"no_new_privileges": False}), fds, sys, fake_exit)
    names = sys.names()
    service_id = names.index("setresuid", names.index("setup_stdio"))  # not the userns's root
    assert names.index("seccomp_load") < service_id < names.index("capset")
    assert ("prctl", PR_SET_NO_NEW_PRIVS, 1, 0) not in sys.calls


@pytest.mark.parametrize("userns", [False, True])
def test_pid1_builds_ahead_of_go_but_never_execs_without_it(
    pipes: tuple[ChildFds, int, int], userns: bool
) -> None:
    # PID 1 builds while the daemon sends Go (a user namespace's id maps were written by the
    # launcher before the fork); aborted, it stops short of execve (its report of EOF goes to
    # a pipe nobody reads any more).
    fds, sync_r, go_w = pipes
    os.close(go_w)
    sys = RecordingSyscalls(files={"/etc/passwd": b"root:x:0:0::/root:/bin/sh\n"})
    with pytest.raises(Exited) as ex:
        run_pid1(replace(plan_for(), userns=userns), fds, sys, fake_exit)
    assert ex.value.code == 127
    assert "pivot_root" in sys.names() and "execve" not in sys.names()
    [msg] = messages(sync_r)
    assert isinstance(msg, ChildError) and msg.stage == "go"


def test_a_failure_ahead_of_go_is_reported_after_go(pipes: tuple[ChildFds, int, int]) -> None:
    # Until Go the daemon reads the sync pipe for the launcher's PID only.
    fds, sync_r, go_w = pipes
    sys = RecordingSyscalls(files={"/etc/passwd": b"root:x:0:0::/root:/bin/sh\n"})
    written: list[object] = []
    real_read = os.read

    def read(fd: int, n: int) -> bytes:
        if fd == fds.go_r:  # PID 1 waits for Go only after its failure: nothing reported yet
            written.extend(messages(sync_r))
            os.write(go_w, GO)
        return real_read(fd, n)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "read", read)
        with pytest.raises(Exited) as ex:
            plan = plan_for(service={"exec": ["/bin/app"], "user": "ghost"})
            run_pid1(plan, fds, sys, fake_exit)
    assert ex.value.code == 127 and written == []
    [msg] = messages(sync_r)
    assert isinstance(msg, ChildError) and msg.stage == "user"


def test_pid1_reports_an_unknown_user_before_exec(pipes: tuple[ChildFds, int, int]) -> None:
    fds, sync_r, go_w = pipes
    os.write(go_w, GO)
    sys = RecordingSyscalls(files={"/etc/passwd": b"root:x:0:0::/root:/bin/sh\n"})
    with pytest.raises(Exited) as ex:
        run_pid1(plan_for(service={"exec": ["/bin/app"], "user": "ghost"}), fds, sys, fake_exit)
    assert ex.value.code == 127
    assert "execve" not in sys.names()
    [msg] = messages(sync_r)
    assert msg == ChildError("user", 0, "unknown user 'ghost': not in the sandbox's /etc/passwd")
