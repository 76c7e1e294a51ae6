"""Daemon side of a launch: plan, fork the launcher, learn PID 1, send Go, wait for exec.

Interface for the engine (synchronous and fast: a few milliseconds):

    launched = launch(LaunchRequest(spec, cgroup_procs, stdout_fd, stderr_fd, ...))
    # launched.pid is PID 1 of the sandbox (a child of this subreaper once the launcher
    # exited); it builds its sandbox and then waits for Go before exec (in a user namespace,
    # waits first). Do host-side setup now (veth into /proc/<pid>/ns/net, ...), then:
    launched.go()     # raises LaunchError(stage, errno, message) if anything failed before exec
    # or, if host-side setup failed: launched.abort()  (PID 1 exits without exec)

The daemon uses the same steps awaited on its loop, never blocking it:
`await launch_async(req, server)` and `await launched.go_async(loop)` (engine/launchslots.py
bounds how many are in flight).

`launch()` raises LaunchError when the launcher fails (cgroup join, unshare) or the request is
impossible (overlay without a directory, no tini for init = true, a bad keep_fds). After go()
raised, PID 1 has exited or is exiting: reap it like any other exit (the engine's pidfd).
Nothing half-built is left: mounts live in PID 1's mount namespace and die with it; the caller
destroys the cgroup.

The daemon must be a child subreaper (PR_SET_CHILD_SUBREAPER) so PID 1 re-parents to it.
Given a fork server (forkserver.py), the launcher is forked by the server, a small separate
process, which is what the daemon does; without one, launch() forks from the calling process,
which must then have a single thread: a fork copies only the calling thread, so a lock another
thread held (the allocator's, logging's) stays locked forever in the child. That is checked,
and fails closed. Both paths run the same children and speak the same protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import select
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Protocol

from supervisor.cgroups import v1
from supervisor.errors import LaunchError
from supervisor.linux import caps, resolvconf, seccomp
from supervisor.linux.syscalls import NAMESPACE_FLAGS, REAL, Syscalls
from supervisor.sandbox.child.privileges import Privileges
from supervisor.sandbox.child.stage import OFF, ChildFds, ChildPlan, Marks, run_launcher
from supervisor.sandbox.host import etcsnap, hostlayout, init, plancache, rootplan
from supervisor.sandbox.host.forkserver import ForkServer
from supervisor.sandbox.wire.mounts import RootSpec, UnitMount
from supervisor.sandbox.wire.protocol import (
    GO,
    MAX_KEEP_FDS,
    ChildError,
    Message,
    PidReport,
    ProtocolError,
    Reader,
    StageFailure,
    Trace,
    describe,
)
from supervisor.unit import credentials
from supervisor.unit.schema import DEFAULT_CAPABILITIES, RUN_SIZE, TMP_SIZE
from supervisor.unit.spec import UnitSpec

# Soft limit on open files (the hard limit is the daemon's); no core dumps, whose contents
# (the service's memory) the host's core_pattern would write outside the sandbox.
NOFILE_SOFT = 1024


@dataclass(frozen=True)
class ExtraBind:
    """A host path the daemon binds in, e.g. the directory holding the notify socket."""

    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class LaunchRequest:
    spec: UnitSpec
    cgroup_procs: list[str]  # UnitCgroup.procs_files(): joined before unsharing
    stdout_fd: int
    stderr_fd: int
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. NOTIFY_SOCKET
    extra_binds: list[ExtraBind] = field(default_factory=list)
    overlay_dir: str | None = None  # required by overlay = true: upper/ and work/ go here
    # An image unit's layer directories in the store, bottom first (imagefetch.py made them).
    image_layers: tuple[str, ...] = ()
    # user namespace only: (first id inside, first id on the host, count), for uid and gid:
    # the unit's own range (engine/idranges.py), never shared with another sandbox.
    id_map: tuple[int, int, int] | None = None
    # The file its user namespace is held at across launches (linux/helduserns.py, one per
    # range); None: a new user namespace per launch.
    userns_file: str | None = None
    timeout: float = 30.0  # for the launcher's report and for PID 1 reaching exec
    # Our fds that PID 1 inherits under the same numbers, not close-on-exec (the output pipe's
    # read end: engine/output.py). At least 3, not stdout_fd/stderr_fd, each once.
    keep_fds: tuple[int, ...] | list[int] = ()
    # A bridge sandbox's /etc/resolv.conf (linux/resolvconf.py); None: built from the host's.
    resolv_conf: bytes | None = None
    # Socket activation: our fds (the unit's [[listen]] sockets) and their names; the service
    # gets them as fds 3.. in this order, with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES.
    listen_fds: tuple[tuple[int, str], ...] = ()
    # A network namespace the daemon holds for the unit (linux/heldnetns.py): the launcher
    # joins it instead of unsharing a new one; `lo` is up and its sysctls set already.
    netns: str | None = None
    # Time every stage of this launch, in the daemon, the fork server's launcher and PID 1
    # (Launched.trace; the bench's --trace). Off, nothing is timed.
    trace: bool = False
    # Where the shared read-only /etc snapshots live (etcsnap.py, <state_dir>/etc); None: a
    # read-only host root gets its /etc files copied or bound one by one.
    etc_dir: str | None = None


@cache
def _last_cap() -> int:
    return caps.last_cap()


def _rlimits() -> tuple[tuple[int, int, int], ...]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = NOFILE_SOFT if hard == resource.RLIM_INFINITY else min(NOFILE_SOFT, hard)
    return ((resource.RLIMIT_NOFILE, soft, hard), (resource.RLIMIT_CORE, 0, 0))


def root_spec(req: LaunchRequest, init_binary: str | None) -> RootSpec:
    sandbox = req.spec.unit.sandbox
    # An image always has an upper layer: the unit's own when it may write (read_only = false),
    # else a tmpfs for mount points only (rootplan._image_root).
    persistent = sandbox.overlay if sandbox.image is None else not sandbox.read_only
    if persistent and not req.overlay_dir:
        raise LaunchError(req.spec.name, "plan", "overlay = true needs an overlay directory")
    if sandbox.image is not None and not req.image_layers:
        raise LaunchError(req.spec.name, "plan", f"image {sandbox.image}: no layers unpacked")
    mounts = [
        UnitMount(m.target, m.source, m.read_only, idmap=m.idmap == "host")
        if m.type == "bind"
        else UnitMount(m.target, None, False, m.size, m.mode)
        for m in sandbox.mounts
    ]
    mounts += [UnitMount(b.target, b.source, b.read_only) for b in req.extra_binds]
    network = req.spec.unit.network
    resolv = req.resolv_conf
    # A host root's /etc and an image's upper layer are the sandbox's own to write; a root
    # directory is the operator's, and keeps its own /etc/resolv.conf.
    own_etc = sandbox.root == "host" or sandbox.image is not None
    if resolv is None and network.mode == "bridge" and own_etc:
        resolv = resolvconf.for_sandbox(network.dns, network.dns_search).content
    return RootSpec(
        root=sandbox.root,
        hostname=req.spec.hostname,
        layers=tuple(reversed(req.image_layers)),  # overlayfs wants the top layer first
        read_only=sandbox.read_only,
        overlay_dir=req.overlay_dir if persistent else None,
        mounts=tuple(mounts),
        devices=tuple((d.path, "w" not in d.access) for d in sandbox.devices),
        init_binary=init_binary,
        # sysfs can only be mounted by the owner of the network namespace (a held one is
        # the daemon's user namespace's, not the sandbox's).
        sysfs="user" not in sandbox.namespaces
        or ("net" in sandbox.namespaces and req.netns is None),
        tmp_size=sandbox.tmp_size or TMP_SIZE,
        run_size=RUN_SIZE,
        resolv_conf=resolv if own_etc and network.mode == "bridge" else None,
        userns="user" in sandbox.namespaces,
    )


# In the bounding set, and in no other set, while no_new_privileges is on. execve of a
# "capability-dumb" binary, whose file capabilities carry the effective bit (Debian's ping:
# cap_net_raw=ep), fails with EPERM unless the bounding set holds them all (capabilities(7)).
# no_new_privileges makes that execve grant nothing, so ping runs without NET_RAW and uses an
# ICMP datagram socket (net_sysctls); without no_new_privileges the bounding set is the unit's
# list alone, because then it is what limits an execve's gains.
EXEC_ONLY_CAPABILITIES = ("NET_RAW",)


def net_sysctls(req: LaunchRequest) -> tuple[tuple[str, str], ...]:
    """Every group may open ICMP datagram sockets in the sandbox's own network namespace, so
    `ping` works without CAP_NET_RAW (not a default capability: raw sockets forge packets), as
    in Docker. The range must be gids the writer's user namespace maps, or the kernel refuses."""
    namespaces = req.spec.unit.sandbox.namespaces
    if "net" not in namespaces or req.netns is not None:
        return ()  # the host's, or a held one (heldnetns.py set it once)
    first, _, count = req.id_map if "user" in namespaces and req.id_map else (0, 0, 2**31)
    return (("net/ipv4/ping_group_range", f"{first} {first + count - 1}"),)


def kept_fds(req: LaunchRequest) -> tuple[int, ...]:
    """`req.keep_fds`, checked: LaunchError(stage "plan") naming the first bad one."""
    keep = tuple(req.keep_fds)

    def bad(message: str) -> LaunchError:
        return LaunchError(req.spec.name, "plan", f"keep_fds: {message}")

    if len(keep) > MAX_KEEP_FDS:
        raise bad(f"at most {MAX_KEEP_FDS} fds, got {len(keep)}")
    for i, fd in enumerate(keep):
        if type(fd) is not int:
            raise bad(f"{fd!r} is not an fd number")
        if fd < 3:
            raise bad(f"fd {fd} is a standard stream (the service's 0-2 are set up separately)")
        if fd in (req.stdout_fd, req.stderr_fd):
            raise bad(f"fd {fd} is the service's stdout/stderr (it gets that as 1 and 2)")
        if fd in keep[:i]:
            raise bad(f"fd {fd} is listed twice")
        try:
            os.fstat(fd)
        except OSError as err:
            raise bad(f"fd {fd}: {err.strerror}") from None
    return keep


LISTEN_FDS_START = 3  # sd_listen_fds(3)


def fd_targets(
    req: LaunchRequest, keep: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(our fds, the numbers PID 1 gets them under): the kept fds keep their numbers unless a
    listen socket needs it (3..), then take the next free one; listen sockets follow in order."""
    listen = tuple(range(LISTEN_FDS_START, LISTEN_FDS_START + len(req.listen_fds)))
    used, targets = set(listen), []
    for fd in keep:
        target = fd
        while target in used:
            target += 1
        used.add(target)
        targets.append(target)
    sources = keep + tuple(fd for fd, _ in req.listen_fds)
    return sources, tuple(targets) + listen


def _with_etc_snapshot(
    req: LaunchRequest, spec: RootSpec, host: hostlayout.HostLayout
) -> tuple[RootSpec, hostlayout.HostLayout]:
    """A read-only host root's /etc: the shared snapshot of its content (etcsnap.py), made
    here when it is new, and the layout that knows it; unchanged when the state dir cannot
    hold one, or a sandbox in a user namespace could not see it (it is mounted idmapped
    there, which the state dir's filesystem may not support: the plan copies the files then)."""
    if req.etc_dir is None or not rootplan.shares_etc(spec):
        return spec, host
    if spec.userns and not etcsnap.can_idmap(req.etc_dir):
        return spec, host
    snapshot = etcsnap.ensure(req.etc_dir, plancache.CACHE.skeleton(spec, host))
    if snapshot is None:  # the state dir cannot hold one: copies, as without a snapshot
        return spec, host
    return replace(spec, etc_snapshot=snapshot), host.with_paths([snapshot])


def build_plan(req: LaunchRequest, host: hostlayout.HostLayout | None = None) -> ChildPlan:
    """Everything the children will do, decided here so they run as little Python as possible."""
    unit, name = req.spec.unit, req.spec.name
    keep = kept_fds(req)
    if "user" in unit.sandbox.namespaces and req.id_map is None:
        raise LaunchError(name, "plan", "a user namespace needs an id range, and none was given")
    flags = 0
    for ns in unit.sandbox.namespaces:
        if ns == "net" and req.netns is not None:
            continue  # joined (ChildPlan.netns), not made
        flags |= NAMESPACE_FLAGS[ns]
    argv = list(unit.service.exec)
    exec_path = argv[0]
    init_binary = None
    if unit.sandbox.init:
        try:
            init_binary = init.find_tini()
        except init.InitMissing as err:
            raise LaunchError(name, "plan", str(err)) from None
        exec_path, argv = init.wrap(argv)
    try:
        # The host is probed now; the root is planned again only if it or the unit changed
        # (a host root's /etc snapshot is part of the unit's spec: new /etc content, new key).
        root = plancache.CACHE.plan(
            root_spec(req, init_binary),
            host,
            prepare=lambda spec, probed: _with_etc_snapshot(req, spec, probed),
        )
    except StageFailure as failure:
        raise LaunchError(name, "plan", failure.message, failure.errno) from None
    try:
        cap_plan = caps.CapPlan.for_unit(
            unit.security.capabilities,
            DEFAULT_CAPABILITIES,
            _last_cap(),
            EXEC_ONLY_CAPABILITIES if unit.security.no_new_privileges else (),
        )
    except KeyError as err:
        raise LaunchError(name, "plan", f"unknown capability {err}") from None
    secrets = _credentials(req)
    env = {**unit.service.env, **req.extra_env}
    if secrets:
        env[credentials.ENV] = credentials.DIRECTORY
    return ChildPlan(
        cgroup_procs=tuple(v1.self_join_file(p) for p in req.cgroup_procs),
        clone_flags=flags,
        hostname=req.spec.hostname if "uts" in unit.sandbox.namespaces else None,
        userns="user" in unit.sandbox.namespaces,
        loopback="net" in unit.sandbox.namespaces and req.netns is None,
        netns=req.netns,
        root_ops=root.ops,
        user=unit.service.user,
        group=unit.service.group,
        workdir=unit.service.workdir,
        exec_path=exec_path,
        argv=tuple(argv),
        service_path=unit.service.exec[0],
        env=tuple(env.items()),
        privileges=Privileges(
            caps=cap_plan,
            no_new_privs=unit.security.no_new_privileges,
            seccomp_bpf=seccomp.default_bpf() if unit.security.seccomp == "default" else None,
        ),
        rlimits=_rlimits(),
        stdout_fd=req.stdout_fd,
        stderr_fd=req.stderr_fd,
        sysctls=net_sysctls(req),
        keep_fds=fd_targets(req, keep)[1],
        listen_names=tuple(name for _, name in req.listen_fds),
        credentials=secrets,
        credentials_dir=credentials.DIRECTORY,
        id_map=req.id_map if "user" in unit.sandbox.namespaces else None,
        staging=root.staging,
        holds=root.holds,
        userns_file=(req.userns_file or "") if "user" in unit.sandbox.namespaces else "",
        trace=req.trace,
    )


def _credentials(req: LaunchRequest) -> tuple[tuple[str, bytes], ...]:
    """The unit's credentials, read now (a rotated file is what this run sees)."""
    spec = req.spec
    wanted = spec.unit.credentials
    if spec.recorded_hashes is not None and any(c.value is not None for c in wanted.values()):
        # A spec read back from a state file: a `value` was never written there.
        raise LaunchError(
            spec.name, credentials.STAGE, "credential values are not kept across a daemon "
            "restart: run `sandboxctl reload` so the unit file is read again",
        )  # fmt: skip
    try:
        return credentials.read_all(wanted)
    except credentials.CredentialError as err:
        raise LaunchError(spec.name, credentials.STAGE, f"{err.key}: {err.message}") from None


def _read_message(  # noqa: PLR0917
    reader: Reader, fd: int, deadline: float, unit: str, stage: str, marks: Marks = OFF
) -> Message | None:
    """The next message but a Trace (whose stamps go to `marks`), None at EOF."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise LaunchError(unit, stage, "timed out waiting for the sandbox")
        # A Trace and the message after it often arrive in one read.
        if reader.buffered() or poller.poll(left * 1000):
            msg = _next_message(reader, unit, stage, marks)
            if not isinstance(msg, Trace):
                return msg


def _next_message(reader: Reader, unit: str, stage: str, marks: Marks) -> Message | None:
    """The next message on the sync pipe (None at EOF) as the readers take it: a protocol
    error is the stage's LaunchError, and a Trace's stamps go to `marks`."""
    try:
        msg = reader.next()
    except ProtocolError as err:
        raise LaunchError(unit, stage, str(err)) from None
    if isinstance(msg, Trace) and marks.on:  # only a traced plan sends one
        marks.stages += msg.stages
        marks.ns += msg.ns
    return msg


async def readable(loop: asyncio.AbstractEventLoop, fd: int, timeout: float) -> bool:
    """Wait on `loop` (never blocking it) until `fd` is readable; False after `timeout` s."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(ready, max(0.0, timeout))
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


async def _read_message_async(
    loop: asyncio.AbstractEventLoop,
    reader: Reader,
    fd: int,
    deadline: float,
    *,
    unit: str,
    stage: str,
    marks: Marks = OFF,
) -> Message | None:
    """`_read_message` on the daemon's loop: other launches and the API run meanwhile. A
    child writes each message with one write below PIPE_BUF, so a readable pipe holds it whole
    and `reader.next()` does not block."""
    while True:
        # A Trace and the message after it often arrive in one read.
        if not reader.buffered() and not await readable(loop, fd, deadline - time.monotonic()):
            raise LaunchError(unit, stage, "timed out waiting for the sandbox")
        msg = _next_message(reader, unit, stage, marks)
        if not isinstance(msg, Trace):
            return msg


class LauncherChild(Protocol):
    """The launcher process, until it has exited and been reaped."""

    def kill(self) -> None: ...
    def reap(self) -> None: ...


class DirectLauncher:
    """A launcher forked by this process: ours to kill and reap."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def kill(self) -> None:
        os.kill(self.pid, 9)

    def reap(self) -> None:
        os.waitpid(self.pid, 0)


class Launched:
    """A sandbox whose PID 1 exists and waits for Go."""

    def __init__(  # noqa: PLR0917
        self,
        req: LaunchRequest,
        pid: int,
        sync_r: int,
        go_w: int,
        launcher: LauncherChild | None = None,
        marks: Marks = OFF,
    ) -> None:
        self.request = req
        self._launcher = launcher
        self._marks = marks
        self.pid = pid
        self.start_time = time.time()
        self._sync_r, self._go_w = sync_r, go_w
        self._reader = Reader(lambda n: os.read(sync_r, n))

    @property
    def unit(self) -> str:
        return self.request.spec.name

    @property
    def trace(self) -> list[tuple[str, int]]:
        """A traced launch's (stage, CLOCK_MONOTONIC ns at its end), in the order taken, from
        the daemon, the launcher and PID 1; complete once go() returned. Empty if untraced."""
        return list(zip(self._marks.stages, self._marks.ns, strict=True))

    def _reap_launcher(self) -> None:
        if self._launcher is not None:
            self._launcher.reap()
            self._launcher = None

    def go(self) -> None:
        """Let PID 1 build its root and exec; raise LaunchError if it fails before exec."""
        self._send_go()
        # The launcher is reaped after PID 1's exec, not before Go: its exit (tearing down a
        # copy of the forking process) then overlaps PID 1 building its root. It holds a copy of
        # the sync pipe's write end, so the EOF that says "exec done" also says it has exited.
        try:
            deadline = time.monotonic() + self.request.timeout
            msg = _read_message(
                self._reader, self._sync_r, deadline, self.unit, "exec", self._marks
            )
            self._marks.mark("daemon: exec observed (EOF on the sync pipe)")
        finally:
            self._close_sync()
            self._reap_launcher()  # from here PID 1 is our child (we are its subreaper)
        self._check_exec(msg)

    async def go_async(self, loop: asyncio.AbstractEventLoop) -> None:
        """`go()` for the daemon's loop: PID 1's root and exec, and the launcher's exit, are
        awaited, not blocked on, so other launches and the API go on meanwhile."""
        self._send_go()
        try:
            deadline = time.monotonic() + self.request.timeout
            msg = await _read_message_async(
                loop, self._reader, self._sync_r, deadline, unit=self.unit, stage="exec",
                marks=self._marks,
            )  # fmt: skip
            self._marks.mark("daemon: exec observed (EOF on the sync pipe)")
        finally:
            self._close_sync()
            await self._reap_launcher_async(loop, deadline)
        self._check_exec(msg)

    def _send_go(self) -> None:
        if self._go_w < 0:
            raise LaunchError(self.unit, "go", "go() after go() or abort()")
        self._marks.mark("daemon: Go sent")
        try:
            os.write(self._go_w, GO)
        except OSError as err:
            self.abort()
            raise LaunchError(
                self.unit, "go", f"PID 1 is gone: {err.strerror}", err.errno or 0
            ) from None
        os.close(self._go_w)
        self._go_w = -1

    def _close_sync(self) -> None:
        os.close(self._sync_r)
        self._sync_r = -1

    def _check_exec(self, msg: Message | None) -> None:
        """What the sync pipe said after Go: EOF is the exec; a ChildError, the stage that
        failed."""
        if isinstance(msg, ChildError):
            raise LaunchError(self.unit, msg.stage, msg.message, msg.errno)
        if msg is not None:
            raise LaunchError(
                self.unit, "go", str(ProtocolError("ChildError or EOF", describe(msg)))
            )

    async def _reap_launcher_async(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Reap the launcher once its pidfd says it has exited (EOF on the sync pipe says it
        is exiting; tearing down its address space takes a moment the loop need not wait)."""
        pidfd = getattr(self._launcher, "pidfd", -1)
        if isinstance(pidfd, int) and pidfd >= 0:
            await readable(loop, pidfd, deadline - time.monotonic())
        self._reap_launcher()

    def abort(self) -> None:
        """PID 1 sees EOF instead of Go and exits without exec (what it built ahead dies with
        its mount namespace)."""
        try:
            self._reap_launcher()
        finally:
            for fd in (self._go_w, self._sync_r):
                if fd >= 0:
                    os.close(fd)
            self._go_w = self._sync_r = -1


def _fork_directly(plan: ChildPlan, fds: ChildFds, syscalls: Syscalls, name: str) -> DirectLauncher:
    threads = threading.active_count()
    if threads != 1:
        raise LaunchError(name, "fork", f"refusing to fork: the daemon has {threads} threads")
    # No collection in the child: a finalizer could touch daemon state (sockets, the loop).
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        launcher = syscalls.fork()
        if launcher == 0:
            try:
                run_launcher(plan, fds, syscalls)
            finally:
                os._exit(1)
    finally:
        if gc_enabled:
            gc.enable()
    return DirectLauncher(launcher)


def _discard(launcher: LauncherChild | None, sync_r: int, go_w: int, kill: bool = False) -> None:
    if launcher is not None and kill:
        launcher.kill()
    os.close(sync_r)
    os.close(go_w)
    if launcher is not None:
        launcher.reap()


@dataclass
class _Start:
    """A launch up to the launcher's first message: its plan, its marks, the sync and go pipes
    (ours: `sync_r`, `go_w`; the children's in `fds`) and its deadline."""

    plan: ChildPlan
    marks: Marks
    fds: ChildFds
    sync_r: int
    go_w: int
    deadline: float

    @classmethod
    def begin(cls, req: LaunchRequest) -> _Start:
        marks = Marks(True) if req.trace else OFF
        marks.mark("daemon: launch called")
        plan = build_plan(req)
        marks.mark("daemon: plan built")
        sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        # Ours are the planned numbers; the fork server passes them along (SCM_RIGHTS).
        fds = ChildFds(sync_w, go_r, fd_targets(req, tuple(req.keep_fds))[0])
        return cls(plan, marks, fds, sync_r, go_w, time.monotonic() + req.timeout)

    @contextlib.contextmanager
    def forking(self) -> Iterator[None]:
        """Around the launcher's fork: the children's ends of the pipes are closed after it
        (the launcher has its copies), ours too if it failed."""
        try:
            yield
        except BaseException:
            os.close(self.sync_r)
            os.close(self.go_w)
            raise
        finally:
            os.close(self.fds.sync_w)
            os.close(self.fds.go_r)

    def reader(self) -> Reader:
        return Reader(lambda n: os.read(self.sync_r, n))


def launch(
    req: LaunchRequest, syscalls: Syscalls = REAL, server: ForkServer | None = None
) -> Launched:
    """Start the launcher; return once PID 1 exists (waiting for Go). See the module docstring.

    The launcher comes from `server` (the daemon's fork server), else from a fork of this
    process."""
    name = req.spec.name
    start = _Start.begin(req)
    launcher: LauncherChild | None = None
    with start.forking():
        if server is None:
            launcher = _fork_directly(start.plan, start.fds, syscalls, name)
        else:
            launcher = server.fork(name, start.plan, start.fds, start.deadline, start.marks)
    try:
        msg = _read_message(
            start.reader(), start.sync_r, start.deadline, name, "launcher", start.marks
        )
    except LaunchError:
        # Hung: kill it; PID 1, if forked, then sees EOF on go and exits.
        _discard(launcher, start.sync_r, start.go_w, kill=True)
        raise
    return _launched(req, msg, launcher, server, start)


async def launch_async(req: LaunchRequest, server: ForkServer) -> Launched:
    """`launch()` through the fork server for the daemon's loop: the launcher's report (it
    joins the cgroup, unshares and forks PID 1) is awaited, so several launches are in flight
    at once and the API answers meanwhile. Then `Launched.go_async`."""
    loop = asyncio.get_running_loop()
    name = req.spec.name
    start = _Start.begin(req)
    with start.forking():
        launcher = await server.fork_async(name, start.plan, start.fds, start.deadline, start.marks)
    try:
        msg = await _read_message_async(
            loop, start.reader(), start.sync_r, start.deadline, unit=name, stage="launcher",
            marks=start.marks,
        )  # fmt: skip
    except BaseException:  # hung, or the daemon is cancelling the launch
        _discard(launcher, start.sync_r, start.go_w, kill=True)
        raise
    return _launched(req, msg, launcher, server, start)


def _launched(
    req: LaunchRequest,
    msg: Message | None,
    launcher: LauncherChild | None,
    server: ForkServer | None,
    start: _Start,
) -> Launched:
    """The launcher's first message: PID 1's PID, else the LaunchError it means."""
    name = req.spec.name
    sync_r, go_w, marks = start.sync_r, start.go_w, start.marks
    if isinstance(msg, PidReport):
        # The launcher is exiting (tearing down a copy of the forking process's address space
        # takes a while): reap it later, in go() or abort(), instead of waiting here.
        marks.mark("daemon: PID 1 reported")
        return Launched(req, msg.pid, sync_r, go_w, launcher, marks)
    _discard(launcher, sync_r, go_w)
    if isinstance(msg, ChildError):
        raise LaunchError(name, msg.stage, msg.message, msg.errno)
    if launcher is None and server is not None:
        # The server died with our request before it could answer, and forked nothing.
        raise LaunchError(name, "forkserver", server.died())
    raise LaunchError(name, "launcher", str(ProtocolError("PidReport", describe(msg))))
