"""`sandboxctl exec`: run a command inside a running sandbox, like nsenter + setpriv.

Everything is taken from the sandbox's PID 1 as the kernel shows it, not from the unit file: a
reload may have changed the file while the old version keeps running, and what must be matched
is the running one. From /proc/<pid>: namespaces, cgroups, root and cwd, the effective uid/gid
(translated into the sandbox's user namespace), the capability bounding set (the unit's list)
and permitted set (what PID 1's user holds: the command gets no more), no_new_privs, seccomp
mode, and the environment.

Order, and why:
  1. pidfd first; everything read from /proc afterwards is checked against it (a PID that was
     reused while we looked would fail the liveness check, never be entered);
  2. the parent enters only the PID namespace (it applies to children) and forks;
  3. the child joins the cgroups through files opened beforehand, *before* entering the cgroup
     namespace (from inside, our old cgroup is invisible and the move is refused), so the
     command is inside the unit's limits and is killed with it;
  4. setns(pidfd, all other namespaces): one call, the kernel enters the user namespace first;
  5. chroot to PID 1's root, chdir to its cwd (fds opened before the mount namespace changed);
  6. identity, then privileges dropped by the same function as the service's PID 1
     (privileges.py), exec.
The parent never joins the cgroup: its memory would count against the unit's limit.
Everything the child needs (seccomp program, modules) is loaded before the chroot.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from supervisor.linux import caps, proc_cgroup, seccomp, users
from supervisor.linux.syscalls import NAMESPACE_FILES, NAMESPACE_FLAGS, REAL, Syscalls
from supervisor.sandbox.child import privileges
from supervisor.sandbox.child.privileges import Privileges
from supervisor.sandbox.wire.protocol import StageFailure

EXIT_CANNOT_ENTER = 126  # as a shell or docker exec: found but could not be run
EXIT_NOT_FOUND = 127


class EnterError(Exception):
    """The sandbox cannot be entered (gone, not ours to read, kernel refused)."""


@dataclass(frozen=True)
class Target:
    pid: int
    clone_flags: int  # the namespaces PID 1 is in that we are not
    cgroup_dirs: tuple[str, ...]
    uid: int  # inside the sandbox's user namespace
    gid: int
    bounding: int  # the unit's capabilities
    permitted: int  # what PID 1 holds: the command gets the same, never more
    no_new_privs: bool
    seccomp: bool
    env: dict[str, str]


def _threads() -> int:
    """Python threads of this process. Without importing threading: this module is loaded by
    the fork server, and an imported threading runs its after-fork hook in every child it
    forks (a sandbox's launcher and PID 1), ~100 more copy-on-write faults per fork. Never
    imported, no thread was started through it, so there is one."""
    threading = sys.modules.get("threading")
    return 1 if threading is None else int(threading.active_count())


def _status(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def to_inside(host_id: int, id_map: str) -> int:
    """A host uid/gid as the user namespace of /proc/<pid>/{uid,gid}_map sees it."""
    for line in id_map.splitlines():
        parts = line.split()
        if len(parts) == 3:
            inside, outside, count = map(int, parts)
            if outside <= host_id < outside + count:
                return host_id - outside + inside
    raise EnterError(f"id {host_id} is not mapped in the sandbox's user namespace")


def _same(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except FileNotFoundError:
        return True  # a namespace kind this kernel lacks
    return (sa.st_ino, sa.st_dev) == (sb.st_ino, sb.st_dev)


def inspect(pid: int, proc: str = "/proc") -> Target:
    base = f"{proc}/{pid}"
    try:
        with open(f"{base}/status") as f:
            status = _status(f.read())
        with open(f"{base}/uid_map") as f:
            uid_map = f.read()
        with open(f"{base}/gid_map") as f:
            gid_map = f.read()
        with open(f"{base}/environ", "rb") as f:
            environ = f.read()
        cgroups, mounts = proc_cgroup.read(proc, pid)
    except FileNotFoundError:
        raise EnterError(f"process {pid} is gone") from None
    except PermissionError as exc:
        raise EnterError(f"cannot read {exc.filename}: permission denied") from None
    flags = 0
    for name, flag in NAMESPACE_FLAGS.items():
        ns = NAMESPACE_FILES[name]
        if not _same(f"{proc}/self/ns/{ns}", f"{base}/ns/{ns}"):
            flags |= flag
    env = {}
    for item in environ.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return Target(
        pid=pid,
        clone_flags=flags,
        cgroup_dirs=tuple(proc_cgroup.directories(cgroups, mounts)),
        uid=to_inside(int(status["Uid"].split()[1]), uid_map),
        gid=to_inside(int(status["Gid"].split()[1]), gid_map),
        bounding=int(status.get("CapBnd", "0"), 16),
        permitted=int(status.get("CapPrm", "0"), 16),
        no_new_privs=status.get("NoNewPrivs") == "1",
        seccomp=status.get("Seccomp", "0") != "0",
        env=env,
    )


def alive(pidfd: int) -> bool:
    poller = select.poll()  # not select(): the fd may be above FD_SETSIZE in a busy daemon
    poller.register(pidfd, select.POLLIN)
    return not poller.poll(0)


def _fail(who: str, message: str, code: int = EXIT_CANNOT_ENTER) -> NoReturn:
    with contextlib.suppress(OSError):
        os.write(2, f"{who}: {message}\n".encode(errors="replace"))
    os._exit(code)


@dataclass(frozen=True)
class Prepared:
    """What the parent opens and loads before the fork (the child cannot, after setns)."""

    pidfd: int
    pid_ns: int
    root: int
    cwd: int
    procs: tuple[int, ...]
    bpf: bytes | None
    last_cap: int


def child(
    target: Target,
    prep: Prepared,
    argv: Sequence[str],
    env: dict[str, str],
    sys_: Syscalls,
    *,
    who: str = "sandboxctl: exec",
) -> NoReturn:
    """After fork, in the sandbox's PID namespace: raw calls only, then exec (or _exit with
    a line on stderr that starts with `who`)."""
    step = "cgroup"
    try:
        for fd in prep.procs:
            os.write(fd, b"0")
        step = "namespaces"
        if flags := target.clone_flags & ~NAMESPACE_FLAGS["pid"]:
            sys_.setns(prep.pidfd, flags)
        step = "root"
        os.fchdir(prep.root)
        os.chroot(".")
        os.fchdir(prep.cwd)
        for fd in (prep.pidfd, prep.pid_ns, prep.root, prep.cwd, *prep.procs):
            os.close(fd)
        step = "user"
        identity = users.resolve(
            str(target.uid), str(target.gid), _read(sys_, "/etc/passwd"), _read(sys_, "/etc/group")
        )
        # PID 1's user holds `permitted`; the command runs as that user, so that is its grant.
        plan = caps.CapPlan(target.bounding, target.permitted, target.permitted, prep.last_cap)
        privileges.drop(sys_, Privileges(plan, target.no_new_privs, prep.bpf), identity)
    except StageFailure as failure:
        _fail(who, str(failure))
    except (OSError, users.UnknownPrincipal) as exc:
        _fail(who, f"{step}: {exc}")
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    try:
        os.execvpe(argv[0], list(argv), env)
    except FileNotFoundError:
        _fail(who, f"{argv[0]}: command not found in the sandbox", EXIT_NOT_FOUND)
    except OSError as exc:
        _fail(who, f"{argv[0]}: {exc.strerror or exc}")
    _fail(who, "exec returned")  # pragma: no cover


def _read(sys_: Syscalls, path: str) -> str:
    try:
        return sys_.read_file(path).decode(errors="replace")
    except OSError:
        return ""


def prepare(target: Target, pidfd: int, bpf: bytes | None) -> Prepared:
    """Open PID 1's namespace, root, cwd and the cgroups to join; `bpf` is the seccomp
    program the child loads if PID 1 runs under one (compiled by the caller: after the chroot
    the host's libseccomp is out of reach, and a fork server has no site-packages)."""
    base = f"/proc/{target.pid}"
    opened: list[int] = []
    try:
        for path in (f"{base}/ns/pid", f"{base}/root", f"{base}/cwd"):
            opened.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        procs = []
        for directory in target.cgroup_dirs:
            procs.append(os.open(f"{directory}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
            opened.append(procs[-1])
    except OSError as exc:
        for fd in opened:
            os.close(fd)
        raise EnterError(f"cannot open {exc.filename}: {exc.strerror}") from None
    return Prepared(
        pidfd, opened[0], opened[1], opened[2], tuple(procs),
        bpf if target.seccomp else None, caps.last_cap(),
    )  # fmt: skip


def run(pid: int, argv: Sequence[str], extra_env: dict[str, str], sys_: Syscalls = REAL) -> int:
    """Run argv in the sandbox whose PID 1 is `pid`; its exit status (128+N for signal N)."""
    if not argv:
        raise EnterError("no command given")
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise EnterError(f"process {pid} is gone") from None
    try:
        target = inspect(pid)
        prep = prepare(target, pidfd, seccomp.default_bpf() if target.seccomp else None)
        try:
            if not alive(pidfd):
                raise EnterError(f"process {pid} ended while entering its sandbox")
            if target.clone_flags & NAMESPACE_FLAGS["pid"]:
                sys_.setns(prep.pid_ns, NAMESPACE_FLAGS["pid"])  # for our child only
            # A fork copies only this thread: a lock another thread holds stays held for good.
            if _threads() != 1:
                raise EnterError("refusing to fork: more than one thread")
            env = {**target.env, **extra_env}
            sys.stdout.flush()
            sys.stderr.flush()
            command = os.fork()
            if command == 0:
                child(target, prep, argv, env, sys_)
        finally:
            for fd in (prep.pid_ns, prep.root, prep.cwd, *prep.procs):
                os.close(fd)
    except OSError as exc:
        raise EnterError(f"{exc.strerror or exc}") from None
    finally:
        os.close(pidfd)
    # Terminal signals reach the command (same process group); we only wait for it.
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)}
    try:
        _, status = os.waitpid(command, 0)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
