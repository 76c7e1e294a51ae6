"""The post-fork side of a launch: the launcher child and the sandbox's PID 1, up to execve.

Runs in forked children, so: no event loop, no logging, no locks, no threads (a fork copies
only the calling thread, and a lock another thread held stays held in the child forever);
only the plan computed by the daemon, `Syscalls` and raw os calls. Every failure becomes a
`ChildError` on the close-on-exec sync pipe followed by `_exit`: a child never fails silently,
and the daemon reports it as `launch-error:<stage>: <message>`.

Launcher (forked by the daemon):
  0. fds: the plan's `keep_fds` go to their planned numbers (inheritable), everything else but
     the children's own fds (sync, go, stdout, stderr: close-on-exec) is closed;
  1. join the unit's cgroup (v1: through `tasks`, which skips a kernel grace period; see
     cgroups/v1.py): before unshare, so that the cgroup namespace is rooted at the unit's
     cgroup and PID 1 is forked inside its limits (a fork bomb is bounded from the first
     instruction);
  2. join the unit's held network namespace, if it has one (tcp/udp [[listen]] sockets live
     there across runs); with a user namespace, join the one held for its range (or make
     it), hold the plan's host sources in it
     (idmapped where wanted) and enter it (holding.py); unshare every other namespace in one
     call: the user namespace owns them;
  3. fork PID 1 (CLONE_NEWPID applies to children only); while PID 1 builds, bring the new
     network namespace's lo up and write the sandbox's own sysctls (ping_group_range: ping
     without CAP_NET_RAW) from here (net_setup); report PID 1's PID, exit.
PID 1:
  4. in a user namespace, become its root (the launcher wrote the id maps before the fork);
  5. build the root and pivot (rootfs.py), hostname, rlimits, stdio;
  6. identity: user and group resolved in the sandbox's own /etc; the credentials, owned by
     that user, on a read-only ramfs of this mount namespace (credentials.py);
  7. privileges dropped in the one order that works (privileges.py, shared with
     `sandboxctl exec` and exec probes), with the workdir entered as the service's user;
  8. wait for Go now (host-side setup such as the veth is done by then: steps 4 to 7
     overlapped it); execve.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NoReturn

from supervisor.linux import caps, users
from supervisor.linux.syscalls import CLONE_NEWNET, CLONE_NEWUSER, HolderRoot, Syscalls
from supervisor.sandbox.child import credentials, holding, privileges, rootfs
from supervisor.sandbox.child.privileges import Privileges
from supervisor.sandbox.wire import mounts
from supervisor.sandbox.wire.protocol import (
    GO,
    ChildError,
    PidReport,
    StageFailure,
    Trace,
    encode,
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ChildPlan:
    """Everything the children do, decided by the daemon before forking (JSON-free, frozen)."""

    cgroup_procs: tuple[str, ...]  # written "0" by the launcher: v1 `tasks`, v2 `cgroup.procs`
    clone_flags: int
    hostname: str | None  # None: no uts namespace
    userns: bool  # own user namespace: become its root before touching any filesystem
    loopback: bool  # bring lo up (own net namespace)
    root_ops: tuple[mounts.Op, ...]
    user: str
    group: str | None
    workdir: str
    exec_path: str  # what execve runs: the service, or tini in front of it
    argv: tuple[str, ...]
    service_path: str  # the service's binary, checked up front when tini wraps it
    env: tuple[tuple[str, str], ...]
    privileges: Privileges
    rlimits: tuple[tuple[int, int, int], ...]  # (resource, soft, hard)
    stdout_fd: int
    stderr_fd: int
    # Sysctls of the sandbox's own namespaces, written by the launcher after PID 1's fork, in
    # the namespaces it unshared with PID 1 (a net sysctl applies to the writer's network
    # namespace; see net_setup): (key under /proc/sys, value).
    sysctls: tuple[tuple[str, str], ...] = ()
    # Inherited by PID 1 and across its execve under these numbers (the daemon's numbers for
    # them); e.g. the output pipe's read end, so that the pipe keeps a reader while no daemon
    # runs (engine/output.py).
    keep_fds: tuple[int, ...] = ()
    # [credentials] as (file name, bytes), read by the daemon at this start, installed by PID 1
    # under credentials_dir (child/credentials.py); they travel only in this plan.
    credentials: tuple[tuple[str, bytes], ...] = ()
    # Socket activation: the names of the last len(listen_names) keep_fds (3..), for
    # LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID.
    listen_names: tuple[str, ...] = ()
    credentials_dir: str = ""
    # A held network namespace's file (linux/heldnetns.py), joined by the launcher before it
    # unshares the rest; clone_flags then lack CLONE_NEWNET.
    netns: str | None = None
    # A user namespace's (first id inside, first id on the host, count), made by the launcher
    # with the plan's `holds` mounted at `staging`/held (holding.py); the root is then built
    # at `staging`/root.
    id_map: tuple[int, int, int] | None = None
    staging: str = ""
    holds: tuple[mounts.Hold, ...] = ()
    # Where the range's user namespace is held across launches (linux/helduserns.py); empty:
    # a new one for this launch.
    userns_file: str = ""
    # Time each stage (the bench's --trace): the launcher and PID 1 send a Trace message with
    # their timestamps before PidReport and before execve. Off, no clock is read.
    trace: bool = False


@dataclass(frozen=True)
class ChildFds:
    sync_w: int  # -> daemon, close-on-exec
    go_r: int  # <- daemon
    # Where this process holds the plan's keep_fds, in the same order: the same numbers after a
    # direct fork, wherever SCM_RIGHTS put them in a fork server's launcher.
    keep: tuple[int, ...] = ()
    # The user-namespace holder's root, inherited from the fork server (HolderRoot): the
    # launcher looks its range's file up through it, then closes it before PID 1's fork.
    holder: HolderRoot | None = None
    # A spare's own procfs instance's /proc/sys (Syscalls.fresh_proc_sys, made while idle), for
    # the sysctls (net_setup); -1: none, the launcher opens the host's /proc/sys.
    proc_sys: int = -1


Exit = Callable[[int], NoReturn]


def _report(fd: int, msg: PidReport | ChildError | Trace) -> None:
    # try, not contextlib.suppress: nothing else on a launcher's path runs contextlib's Python,
    # whose pages would be copied for this one write (the PID report).
    try:  # noqa: SIM105
        os.write(fd, encode(msg))
    except OSError:  # the daemon is gone: nothing left to tell
        pass


class Marks:
    """A traced launch's timestamps (ChildPlan.trace): `mark(stage)` at the end of each stage,
    sent as one Trace message. Untraced, `mark` is a no-op and nothing is sent."""

    def __init__(self, on: bool, stages: list[str] | None = None, ns: list[int] | None = None):
        self.on = on
        self.stages, self.ns = stages or [], ns or []

    def mark(self, stage: str) -> None:
        if self.on:
            self.stages.append(stage)
            self.ns.append(time.monotonic_ns())

    def send(self, fd: int) -> None:
        """Report the marks so far and start afresh (a forked PID 1 must not resend them)."""
        if self.on:
            _report(fd, Trace(self.stages, self.ns))
            self.stages, self.ns = [], []


OFF = Marks(False)


def _step(stage: str, what: str, fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except OSError as err:
        raise StageFailure.from_oserror(stage, what, err) from None


def make_way(plan: ChildPlan, fds: ChildFds, sys: Syscalls) -> tuple[ChildPlan, ChildFds]:
    """Move every fd of ours that sits on a number a kept fd must take (sync, go, stdout,
    stderr, a kept fd itself) above all of them; return the plan and fds with the new numbers.

    A fork server's launcher receives its fds at whatever numbers were free, so the go pipe may
    well hold the number the output pipe must have in PID 1. A kept fd already on its own number
    moves too: dup2(n, n) would leave it close-on-exec, and the copy back clears that. Nothing
    is closed or overwritten here, so a failure can still be reported on the original sync fd.
    """
    targets = plan.keep_fds
    if len(fds.keep) != len(targets):
        raise StageFailure("fds", 0, f"{len(fds.keep)} fds for {len(targets)} keep_fds")
    if not targets:
        return plan, fds
    held = (*(() if fds.holder is None else (fds.holder.fd,)), *_open(fds.proc_sys))
    own = (fds.sync_w, fds.go_r, plan.stdout_fd, plan.stderr_fd, *fds.keep, *held)
    low = max(*targets, *own) + 1  # above every target: a moved fd is never overwritten
    moved: dict[int, int] = {}
    for fd in dict.fromkeys(own):  # stdout and stderr are often one fd
        if fd in targets:
            try:
                moved[fd] = sys.dup_above(fd, low)
            except OSError as err:
                what = f"move fd {fd} to {low} or above"
                raise StageFailure.from_oserror("fds", what, err) from None
    plan = replace(
        plan,
        stdout_fd=moved.get(plan.stdout_fd, plan.stdout_fd),
        stderr_fd=moved.get(plan.stderr_fd, plan.stderr_fd),
    )
    fds = ChildFds(
        moved.get(fds.sync_w, fds.sync_w),
        moved.get(fds.go_r, fds.go_r),
        tuple(moved.get(fd, fd) for fd in fds.keep),
        None
        if fds.holder is None
        else fds.holder._replace(fd=moved.get(fds.holder.fd, fds.holder.fd)),
        moved.get(fds.proc_sys, fds.proc_sys),
    )
    return plan, fds


def _open(fd: int) -> tuple[int, ...]:
    return (fd,) if fd >= 0 else ()


def place_fds(plan: ChildPlan, fds: ChildFds, sys: Syscalls) -> None:
    """After make_way: each kept fd onto its planned number, inheritable; close all the rest."""
    for fd, target in zip(fds.keep, plan.keep_fds, strict=True):
        _step("fds", f"dup2 fd {fd} to {target}", sys.dup_to, fd, target)
    # Daemon fds (control socket, other units' log files and go pipes) must not reach the
    # service: a leaked fd is a capability the sandbox was never given.
    # Closed by run_launcher, soon.
    held = {*(() if fds.holder is None else (fds.holder.fd,)), *_open(fds.proc_sys)}
    sys.close_fds_except(
        {*plan.keep_fds, plan.stdout_fd, plan.stderr_fd, fds.sync_w, fds.go_r, *held}
    )


def run_launcher(
    plan: ChildPlan,
    fds: ChildFds,
    sys: Syscalls,
    exit: Exit = os._exit,
    *,
    marks: Marks | None = None,
    signals_reset: bool = False,
) -> NoReturn:
    """The launcher child: fds, cgroup, unshare, fork PID 1, report, exit. `marks`: the
    trace's timestamps so far (a fork server's spare has taken some). `signals_reset`: the
    caller reset them already (a spare does while it waits; again here was ~0.1 ms of CPU
    per launch, for nothing)."""
    report = fds.sync_w
    if marks is None:
        marks = Marks(True) if plan.trace else OFF
    try:
        if not signals_reset:
            sys.reset_signals()
        plan, fds = make_way(plan, fds, sys)
        # From here the original sync fd may be overwritten by a kept fd: report on the copy.
        report = fds.sync_w
        place_fds(plan, fds, sys)
        marks.mark("launcher: fds placed")
        for procs in plan.cgroup_procs:
            _step("cgroup", f"join {procs}", sys.write_file, procs, b"0", False)
        marks.mark("launcher: cgroup joined")
        if plan.netns is not None:
            # Before unshare: entering a network namespace owned by the daemon's user
            # namespace needs the daemon's privileges, not those of a new user namespace.
            _step("listen", f"join the held netns {plan.netns}", join_netns, plan.netns, sys)
        holding_ns, flags = _enter_userns(plan, fds, sys, marks)
        _step("unshare", "unshare namespaces", lambda: sys.unshare(flags))
        marks.mark("launcher: unshared")
        sysctl_dir = _sysctl_dir(plan, fds, sys)
        pid = sys.fork()
        if pid == 0:
            # Not the last references to them: the launcher still has its own.
            _close_held(sys, holding_ns, sysctl_dir)
            marks.stages, marks.ns = [], []  # the launcher reports its own
            run_pid1(plan, fds, sys, exit, marks)
        marks.mark("launcher: PID 1 forked")
        if plan.loopback or plan.sysctls:
            try:
                net_setup(plan, sys, pid, sysctl_dir)
            finally:
                _close_held(sys, sysctl_dir)
            marks.mark("launcher: lo up, sysctls")
        marks.send(report)
        _report(report, PidReport(pid))
        if holding_ns >= 0:
            sys.close(holding_ns)  # the last one, after the report: off the launch's path
    except StageFailure as failure:
        _report(report, failure.to_message())
        exit(1)
    except BaseException as exc:  # a child must never die silently
        _report(report, ChildError("launcher", 0, f"{type(exc).__name__}: {exc}"))
        exit(1)
    exit(0)


def _sysctl_dir(plan: ChildPlan, fds: ChildFds, sys: Syscalls) -> int:
    """The /proc/sys the sysctls are written through (-1: the plan has none): the spare's own
    procfs instance's if it made one (Syscalls.fresh_proc_sys), else the host's. Opened
    before PID 1's fork: PID 1 shares our mount namespace, and its pivot_root moves our root
    too, onto the sandbox's own /proc with a read-only /proc/sys (EROFS), or none at all."""
    if not plan.sysctls:
        _close_held(sys, fds.proc_sys)
        return -1
    if fds.proc_sys >= 0:
        return fds.proc_sys
    return sys.open_path("/proc/sys", directory=True)


def _close_held(sys: Syscalls, *held: int) -> None:
    """Close the fds of `held` that are open (-1: none)."""
    for fd in held:
        if fd >= 0:
            sys.close(fd)


def _enter_userns(plan: ChildPlan, fds: ChildFds, sys: Syscalls, marks: Marks) -> tuple[int, int]:
    """The plan's user namespace entered, its sources held (holding.py), if it has one; the
    holding mount namespace's fd (-1: none) and the flags left to unshare."""
    flags = plan.clone_flags
    holding_ns = -1  # the launcher's holding mount namespace (holding.py, step 5)
    try:
        if plan.id_map is not None:
            holding_ns = holding.enter(
                sys, plan.id_map, plan.staging, plan.holds, plan.userns_file, holder=fds.holder
            )
            flags &= ~CLONE_NEWUSER  # entered already
            marks.mark("launcher: user namespace made, sources held")
    finally:
        if fds.holder is not None:
            # Before PID 1's fork: no sandbox may hold a way into the holder.
            sys.close(fds.holder.fd)
    return holding_ns, flags


def net_setup(plan: ChildPlan, sys: Syscalls, pid1: int, sysctl_dir: int) -> None:
    """Bring the sandbox's lo up and write its sysctls from the launcher, which unshared (or
    joined) the sandbox's namespaces with PID 1 and holds the user namespace's privileges in
    them: a sysctl applies to the writer's namespace (and its range is checked against the
    writer's user namespace), so the launcher writes exactly what PID 1 would have.

    Here rather than in PID 1: the launcher has nothing else left to do, so this runs on the
    other core while PID 1 builds its root, off the launch's path. The first look-up of
    /proc/sys/net/ipv4 in a new network namespace is the costly part (0.3 ms of CPU alone on
    the machine, 2 to 7 ms while other namespaces come and go around it). Before the PID
    report, so before the daemon's Go, so before the service's execve: the service never runs
    with lo down or a sysctl unset. If a step fails, PID 1 is killed and reaped here (it would
    otherwise wait for a Go that never comes) and the launch fails, stage "network" or
    "sysctl" as before. `sysctl_dir`: an fd of /proc/sys, opened before PID 1's fork."""
    try:
        if plan.loopback:
            _step("network", "bring lo up", sys.link_up, "lo")
        for key, value in plan.sysctls:
            what = f"set {key}"
            _step("sysctl", what, sys.write_file, key, value.encode(), False, sysctl_dir)
    except StageFailure:
        sys.kill_child(pid1)
        raise


def join_netns(path: str, sys: Syscalls) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        sys.setns(fd, CLONE_NEWNET)
    finally:
        os.close(fd)


def await_go(fds: ChildFds) -> None:
    """Block until the daemon's Go; StageFailure "go" if it died or aborted this launch."""
    if os.read(fds.go_r, 1) != GO:
        raise StageFailure("go", 0, "expected Go from the daemon, received EOF")
    os.close(fds.go_r)


def run_pid1(
    plan: ChildPlan, fds: ChildFds, sys: Syscalls, exit: Exit = os._exit, marks: Marks = OFF
) -> NoReturn:
    """The sandbox's PID 1 up to execve; never returns.

    Nothing it builds depends on the daemon's host-side setup (a veth is moved into its netns
    from outside; a user namespace's id maps were written by the launcher before the fork),
    so it builds its whole sandbox while the daemon reads its PID and sends Go, and waits for
    Go only before execve: the launch is one round trip shorter. Aborted (EOF instead of Go),
    it exits without exec, and what it built dies with its mount namespace."""
    went = False
    message: ChildError
    try:
        sys.setsid()
        marks.mark("PID 1: scheduled, setsid")
        if plan.userns:
            # Our host uid is unmapped in the new namespace (it reads as 65534, and creating an
            # inode fails with EOVERFLOW) until we switch to the mapped root the launcher set up.
            _step("userns", "become root of the user namespace", caps.switch_user, sys, 0, 0, [])
        marks.mark("PID 1: userns root")
        build_sandbox(plan, sys, marks)
        identity = resolve_identity(plan, sys)
        credentials.install(sys, plan.credentials, identity, plan.credentials_dir)
        marks.mark("PID 1: identity, credentials")
        privileges.drop(sys, plan.privileges, identity, lambda: enter_workdir(plan, sys))
        env = {"PATH": DEFAULT_PATH, "HOME": identity.home, "USER": identity.name}
        if plan.hostname:
            env["HOSTNAME"] = plan.hostname
        env.update(plan.env)
        env.update(listen_env(plan))
        marks.mark("PID 1: privileges dropped, env")
        if not went:
            await_go(fds)
            went = True
        marks.mark("PID 1: Go received, ready to exec")
        marks.send(fds.sync_w)  # the last write before execve (the pipe closes with it)
        try:
            sys.execve(plan.exec_path, list(plan.argv), env)
        except OSError as err:
            raise StageFailure.from_oserror("exec", f"exec {plan.exec_path}", err) from None
    except StageFailure as failure:
        message = failure.to_message()
    except BaseException as exc:  # a child must never die silently
        message = ChildError("pid1", 0, f"{type(exc).__name__}: {exc}")
    if not went and message.stage != "go":
        # Failed while building ahead of Go: until Go the daemon reads the sync pipe for the
        # launcher's report only, so the failure is told after Go, where go() expects it.
        try:
            await_go(fds)
        except (StageFailure, OSError):
            exit(127)  # aborted: nobody is listening
    _report(fds.sync_w, message)
    exit(127)


def listen_env(plan: ChildPlan) -> dict[str, str]:
    """sd_listen_fds(3)'s variables. LISTEN_PID is the service's PID as it sees itself: ours
    (the exec keeps it), or with tini in front, its first child's, which in a new PID
    namespace is always 2 (tini forks nothing before it)."""
    if not plan.listen_names:
        return {}
    env = {"LISTEN_FDS": str(len(plan.listen_names)), "LISTEN_FDNAMES": ":".join(plan.listen_names)}
    pid = os.getpid()
    if plan.exec_path == plan.service_path:
        env["LISTEN_PID"] = str(pid)
    elif pid == 1:
        env["LISTEN_PID"] = "2"
    return env


def build_sandbox(plan: ChildPlan, sys: Syscalls, marks: Marks = OFF) -> None:
    """Root, hostname, rlimits, stdio: everything before identity (lo and the sysctls are the
    launcher's: net_setup)."""
    rootfs.apply(sys, plan.root_ops)
    marks.mark("PID 1: root built (mounts, pivot_root)")
    if plan.hostname:
        _step(
            "hostname", f"sethostname {plan.hostname}", lambda: sys.sethostname(plan.hostname or "")
        )
    for res, soft, hard in plan.rlimits:
        _step("rlimits", f"setrlimit {res}", sys.setrlimit, res, soft, hard)
    _step("stdio", "set up stdin/stdout/stderr", sys.setup_stdio, plan.stdout_fd, plan.stderr_fd)
    marks.mark("PID 1: hostname, rlimits, stdio")


def _read_or_empty(sys: Syscalls, path: str) -> str:
    try:
        return sys.read_file(path).decode(errors="replace")
    except OSError:
        return ""


def resolve_identity(plan: ChildPlan, sys: Syscalls) -> users.Identity:
    """The service's user and group, as the sandbox's own /etc names them."""
    try:
        return users.resolve(
            plan.user,
            plan.group,
            _read_or_empty(sys, "/etc/passwd"),
            _read_or_empty(sys, "/etc/group"),
        )
    except users.UnknownPrincipal as err:
        raise StageFailure("user", 0, str(err)) from None


def enter_workdir(plan: ChildPlan, sys: Syscalls) -> None:
    """As the service's user (a workdir it cannot enter fails here, not in the service)."""
    _step("workdir", f"chdir {plan.workdir}", lambda: sys.chdir(plan.workdir))
    if plan.exec_path != plan.service_path and sys.kind(plan.service_path, follow=True) is None:
        raise StageFailure("exec", 2, f"exec {plan.service_path}: No such file or directory")
