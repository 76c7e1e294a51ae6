"""One run of a unit: its sandbox's PID 1, pidfd, cgroup, output pipe and OOM watch.

A Run owns these kernel resources from launch (or re-adoption) to `finish()` (the process has
ended: tear everything down) or `detach()` (the daemon leaves the service running: close only
the daemon's own fds). It reports what happens through one `on_change` callback and decides
nothing: the policy lives in the unit runner.

Fds the daemon holds per run (`fds_per_run`), and nothing else once `launch` has returned:
the pidfd of PID 1, the output pipe's read end (and stderr's, when output goes to the journal),
the log file (opened at the first output; never with `output = "journal"`), and the OOM watch
(`Manager.oom_watch_fds`). The launch's own
fds (the write end, the sync and go pipes, the launcher's pidfd) are closed before it returns.
A unit with `[oom] pressure_limit` holds 2 more while it runs, in its runner's PressureMonitor
(the PSI trigger and its epoll set: engine/pressure.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from supervisor.cgroups import Closeable, Limits, Manager, OomEvent, UnitCgroup
from supervisor.contract import OUTPUTS as OUTPUT_VALUES
from supervisor.contract import Output
from supervisor.engine.exits import exit_reason
from supervisor.engine.idranges import IdRanges
from supervisor.engine.journalout import JournalStream, to_journal
from supervisor.engine.launchslots import LaunchSlots
from supervisor.engine.output import Capture, RotatingLog, Sink
from supervisor.engine.ports import ImageStore, Launcher, Prober, Started
from supervisor.engine.restarttrace import (
    CGROUP_MADE,
    EXEC_SEEN,
    OFF,
    PID1_REPORTED,
    RestartTrace,
)
from supervisor.engine.restarttrace import now as monotonic_ns
from supervisor.engine.store import UnitRecord
from supervisor.errors import CgroupError, LaunchError
from supervisor.linux import faultpoint, fdlimit
from supervisor.linux import journal as jnl
from supervisor.linux import pidfd as proc
from supervisor.linux.journal import JournalSocket
from supervisor.linux.pipes import FdProblem, check_fd
from supervisor.log import get_logger
from supervisor.unit.schema import Resources, Sandbox
from supervisor.unit.spec import UnitSpec

log = get_logger()
# How long to wait for init to reap a re-adopted PID 1 before its status counts as unknown.
# systemd reaps at once, but not every init does: the one on our CI machines reaps orphans
# only every ~2 s, so anything near that turns a known exit status into `lost`.
_UNKNOWN_STATUS_AFTER = 6.0
_STATUS_POLL = 0.05


def fds_per_run(cgroups: Manager, output: Output = "file") -> int:
    """The most fds one running sandbox costs the daemon (see the module docstring). With the
    journal, stderr has a pipe of its own (journalout.py): one more with `both`; `journal`
    alone has that pipe but never opens the log file."""
    return 3 + (output == "both") + cgroups.oom_watch_fds


def limits_from(resources: Resources, sandbox: Sandbox | None = None) -> Limits:
    """`[resources]` in the cgroup layer's terms (same names, same units); with `sandbox`,
    its device allowlist too (a new cgroup). Without it, a live update keeps the devices."""
    return Limits.from_config(resources, None if sandbox is None else sandbox.devices)


@dataclass(frozen=True)
class Host:
    """What runs need from the daemon: the loop, cgroups, the launcher, the prober (exec health
    probes; None: they fail saying so), the clocks."""

    loop: asyncio.AbstractEventLoop
    cgroups: Manager
    launcher: Launcher
    prober: Prober | None = None
    images: ImageStore | None = None  # None: no layer store (tests); `images` reports none
    output: Output = "file"  # the daemon config's `output`: a unit without its own goes there
    journal: JournalSocket | None = None  # None: no journal (tests): output goes to the file
    # The units' user-namespace ranges; None (tests): a unit with a user namespace fails its
    # launch, having no range.
    id_ranges: IdRanges | None = None
    # How many launches are in flight at once (launchslots.py); None: no bound (tests).
    launch_slots: LaunchSlots | None = None
    # Time each restart, hop by hop (restarttrace.py; SANDBOXD_TRACE_RESTARTS=1, the bench).
    trace_restarts: bool = False
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time


def _launch_cgroup(
    cgroups: Manager, spec: UnitSpec, prepared: Callable[[Limits], UnitCgroup | None] | None
) -> UnitCgroup:
    limits = limits_from(spec.unit.resources, spec.unit.sandbox)
    made = prepared(limits) if prepared is not None else None
    return made if made is not None else _fresh_cgroup(cgroups, spec.name, limits)


def run_age(pid_start: int | None, started_at: float | None, wall_now: float) -> float:
    """Seconds since a run began, by its PID 1's start on the boot clock; the wall clock
    (which steps) only for a record from an earlier boot or without a start time."""
    age = proc.seconds_since_start(pid_start) if pid_start is not None else None
    if age is None:
        age = wall_now - (started_at or wall_now)
    return max(0.0, age)


class Run:
    # Slots: a unit holds its run for the run's life (issue 23, the daemon's heap per unit).
    __slots__ = (
        "_done",
        "_on_change",
        "_oom_watch",
        "_started",
        "_status_deadline",
        "capture",
        "cgroup",
        "ended",
        "ended_ns",
        "err_capture",
        "host",
        "oom_base",
        "oom_kills",
        "oom_seen_ns",
        "output",
        "own_child",
        "pid",
        "pid_start",
        "pidfd",
        "spec",
        "started_at",
        "started_mono",
        "status",
        "trace",
        "unit",
    )

    def __init__(
        self,
        host: Host,
        unit: str,
        pid: int,
        pidfd: int,
        *,
        own_child: bool,
        cgroup: UnitCgroup | None,
        capture: Capture | None,
        oom_base: int,
        started_at: float,
        on_change: Callable[[], None],
        err_capture: Capture | None = None,
        output: Output = "file",
    ) -> None:
        self.host, self.unit, self.pid, self.pidfd = host, unit, pid, pidfd
        self.own_child, self.cgroup, self.capture = own_child, cgroup, capture
        # With the journal, stderr has a pipe of its own (journalout.py); else it shares stdout's.
        self.err_capture, self.output = err_capture, output
        self.oom_base, self.started_at, self._on_change = oom_base, started_at, on_change
        self.pid_start = proc.start_time(pid)
        # The run began when its PID 1 did, by the boot clock: the same figure for a launch and
        # for a re-adoption (a wall-clock step while no daemon ran must not move it).
        self.started_mono = host.monotonic() - run_age(self.pid_start, started_at, host.wall())
        self.ended = False
        self.status: int | None = None  # wait status; None with `ended`: unknown
        self.oom_kills = 0  # OOM kills in this run's cgroup so far
        # CLOCK_MONOTONIC ns when the exit and the first OOM kill were seen (0: not yet), for a
        # traced restart (restarttrace.py).
        self.ended_ns = self.oom_seen_ns = 0
        self._status_deadline = 0.0
        self._oom_watch: Closeable | None = None
        host.loop.add_reader(pidfd, self._on_pidfd)
        if cgroup is not None:
            try:
                self._oom_watch = cgroup.watch_oom(host.loop, self._on_oom)
            except CgroupError as exc:
                log.warning("unit.oom_watch_failed", unit=unit, error=str(exc))
            # The watch signals only kills after it exists. One before it (a service out of
            # memory at once, or while no daemon watched an adopted run) is in the counter
            # already: count it now, and wake the runner once this run is its own.
            self._refresh_oom()
            if self.oom_kills:
                host.loop.call_soon(on_change)

    # -- creation ------------------------------------------------------------------------

    @classmethod
    async def launch(
        cls,
        host: Host,
        spec: UnitSpec,
        sink: RotatingLog,
        on_change: Callable[[], None],
        trace: RestartTrace = OFF,
        *,
        prepared: Callable[[Limits], UnitCgroup | None] | None = None,
    ) -> Run:
        """Create the cgroup, launch the sandbox (and its network), let it exec. Raises
        LaunchError/CgroupError after undoing what it did; fdlimit.NoHeadroom, before doing
        anything, if the daemon is too short of fds to launch and still serve its API.
        Holds one of `host.launch_slots` throughout: the waits are awaited, so other launches
        and the API go on meanwhile, a bounded number of launches at a time. `trace` gets the
        launch's stamps (a traced restart: restarttrace.py). `prepared`: the unit's cgroup
        made ahead with these limits, or None (nextcgroup.py)."""
        if host.launch_slots is None:
            return await cls._launch(host, spec, sink, on_change, trace, prepared=prepared)
        async with host.launch_slots.held():
            return await cls._launch(host, spec, sink, on_change, trace, prepared=prepared)

    @classmethod
    async def _launch(
        cls,
        host: Host,
        spec: UnitSpec,
        sink: RotatingLog,
        on_change: Callable[[], None],
        trace: RestartTrace,
        *,
        prepared: Callable[[Limits], UnitCgroup | None] | None,
    ) -> Run:
        begun = await Begun.begin(host, spec, sink, trace, prepared=prepared)
        return await begun.go(on_change)

    @classmethod
    def adopt(
        cls, host: Host, record: UnitRecord, sink: RotatingLog, on_change: Callable[[], None]
    ) -> Run | None:
        """Take over the PID 1 a previous daemon left running; None if it has ended (or its
        PID now belongs to another process)."""
        if record.pid is None or record.pid_start is None or record.started_at is None:
            return None
        pidfd = proc.open_pidfd(record.pid, record.pid_start)
        if pidfd is None:
            return None
        cgroup = host.cgroups.open(record.unit)
        try:
            member = cgroup is not None and record.pid in cgroup.pids()
            problem = "the process is not in the unit's cgroup"
        except CgroupError as exc:
            member, problem = False, f"the unit's cgroup cannot be read: {exc}"
        if not member:
            # The same pid and start time, yet not in the unit's cgroup: the pid was reused
            # by another process with a record that says otherwise (corrupt or planted), or
            # the sandbox was moved out by hand. Never adopt, and so never signal, a process
            # that the unit cannot be shown to own.
            os.close(pidfd)
            log.warning("unit.adopt_refused", unit=record.unit, pid=record.pid, error=problem)
            return None
        # The run keeps the output its launch had (a changed unit restarts, never re-routes).
        output: Output = next((o for o in OUTPUT_VALUES if o == record.output), "file")
        if record.error_fd is None or host.journal is None:
            output = "file"  # a run with one pipe: it goes to the file, as its launch chose
        out_sink, err_sink = _sinks(host, sink, output)
        _tell_pid(record.pid, out_sink, err_sink)
        capture = err_capture = None
        if record.output_fd is not None and record.output_inode is not None:
            capture = _reopen_output(
                host, out_sink, record.unit, pid=record.pid, fd=record.output_fd,
                inode=record.output_inode,
            )  # fmt: skip
        if err_sink is not None and record.error_fd is not None and record.error_inode:
            err_capture = _reopen_output(
                host, err_sink, record.unit, pid=record.pid, fd=record.error_fd,
                inode=record.error_inode,
            )  # fmt: skip
        return cls(
            host, record.unit, record.pid, pidfd, own_child=False,
            cgroup=cgroup, capture=capture, oom_base=record.oom_base,
            started_at=record.started_at, on_change=on_change,
            err_capture=err_capture, output=output,
        )  # fmt: skip

    # -- while it runs -------------------------------------------------------------------

    def uptime(self) -> float:
        return self.host.monotonic() - self.started_mono

    def signal(self, signum: int) -> bool:
        return not self.ended and proc.send_signal(self.pidfd, signum)

    def kill_all(self) -> None:
        """SIGKILL every process of the sandbox (PID 1 first, then the whole cgroup)."""
        self.signal(signal.SIGKILL)
        if self.cgroup is not None:
            try:
                self.cgroup.kill_all()
            except CgroupError as exc:
                log.error("unit.kill_failed", unit=self.unit, error=str(exc))

    def reason(self) -> str:
        return exit_reason(self.status, self.oom_kills)

    def _on_pidfd(self) -> None:
        self.ended_ns = monotonic_ns()
        self.host.loop.remove_reader(self.pidfd)
        if self.own_child:
            self.status = proc.reap(self.pid)
        if self.status is None:
            # How long init may take to reap it is the machine's time, not a unit deadline:
            # the loop's clock, so a test's frozen Host.monotonic cannot make this wait forever.
            self._status_deadline = self.host.loop.time() + _UNKNOWN_STATUS_AFTER
            self._poll_status()
        else:
            self._ended()

    def _poll_status(self) -> None:
        # Not our child (re-adopted): init reaps it, then the kernel keeps the status for us.
        self.status = proc.exit_status_from_pidfd(self.pidfd)
        if self.status is None and self.host.loop.time() < self._status_deadline:
            self.host.loop.call_later(_STATUS_POLL, self._poll_status)
        else:
            self._ended()

    def _ended(self) -> None:
        self._refresh_oom()
        self.ended = True
        self._on_change()

    def _on_oom(self, event: OomEvent) -> None:
        self.oom_seen_ns = self.oom_seen_ns or monotonic_ns()
        self.oom_kills = max(self.oom_kills, event.oom_kills - self.oom_base)
        self._on_change()

    def _refresh_oom(self) -> None:
        if self.cgroup is not None:
            with contextlib.suppress(CgroupError, OSError):
                self.oom_kills = max(self.oom_kills, self.cgroup.oom_kill_count() - self.oom_base)

    # -- the end -------------------------------------------------------------------------

    def finish(self, retire: Callable[[UnitCgroup], None] | None = None) -> None:
        """The run has ended: drain its output, close its fds, and remove its cgroup, or hand
        it to `retire` (nextcgroup.py: renamed out of the unit's name, removed later)."""
        self._close_fds()
        if self.cgroup is not None:
            (retire or functools.partial(discard_cgroup, unit=self.unit))(self.cgroup)

    def detach(self) -> None:
        """Leave the service running (daemon exit with on_exit = "leave")."""
        if not self.ended:
            self.host.loop.remove_reader(self.pidfd)
        self._close_fds()

    def _close_fds(self) -> None:
        if self._oom_watch is not None:
            self._oom_watch.close()
            self._oom_watch = None
        for capture in (self.capture, self.err_capture):
            if capture is not None:
                capture.close(drain=True)
        self.capture = self.err_capture = None
        if self.pidfd >= 0:
            self.host.loop.remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = -1


class Begun:
    """A launch up to "PID 1 waits for Go": its cgroup made, its output pipes open, PID 1
    forked (its root built or being built) and held by a pidfd, but not exec'd. `go` lets it
    exec and hands every resource to the Run it returns; `abort` undoes it all (PID 1 killed
    and reaped, its cgroup removed, the pipes closed) and may be called at any point, also
    more than once. Until one of them, PID 1 only waits: the Go wait has no deadline of its
    own (the launch's timeout starts at Go), so a begun launch may wait as long as the daemon
    needs, e.g. for an earlier run's exit to be seen before this one may exec."""

    def __init__(self, host: Host, spec: UnitSpec, cgroup: UnitCgroup, trace: RestartTrace) -> None:
        self.host, self.spec, self.cgroup, self.trace = host, spec, cgroup, trace
        self.output = output_of(host, spec)
        self.capture: Capture | None = None
        self.err_capture: Capture | None = None
        self.oom_base = 0
        self.pid = self.pidfd = -1
        self._started: Started | None = None
        self._done = False  # gone to a Run, or aborted

    @classmethod
    async def begin(
        cls,
        host: Host,
        spec: UnitSpec,
        sink: RotatingLog,
        trace: RestartTrace = OFF,
        *,
        prepared: Callable[[Limits], UnitCgroup | None] | None = None,
    ) -> Begun:
        """Create the cgroup and fork the sandbox up to its Go (see `Run.launch` for what
        it raises, after undoing what it did)."""
        fdlimit.check_headroom()
        cgroup = _launch_cgroup(host.cgroups, spec, prepared)
        trace.mark(CGROUP_MADE)
        faultpoint.reached(faultpoint.LAUNCH_CGROUP_CREATED, spec.name)
        begun = cls(host, spec, cgroup, trace)
        try:
            await begun._fork(sink)
        except BaseException:
            begun.abort()
            raise
        return begun

    async def _fork(self, sink: RotatingLog) -> None:
        host, spec = self.host, self.spec
        self.oom_base = self.cgroup.oom_kill_count()
        out_sink, err_sink = _sinks(host, sink, self.output)
        self.capture, write_fd = Capture.new(host.loop, out_sink)
        err_fd: int | None = None
        try:
            if err_sink is None:
                started = await host.launcher(spec, self.cgroup, write_fd, [self.capture.kept_fd])
            else:
                self.err_capture, err_fd = Capture.new(host.loop, err_sink)
                started = await host.launcher(
                    spec, self.cgroup, write_fd, [self.capture.kept_fd, self.err_capture.kept_fd],
                    stderr_fd=err_fd,
                )  # fmt: skip
        finally:
            os.close(write_fd)  # the service holds it now; EOF comes when it is gone
            if err_fd is not None:
                os.close(err_fd)
        self.trace.mark(PID1_REPORTED)
        self._started, self.pid = started, started.pid
        _tell_pid(self.pid, out_sink, err_sink)
        # Hold the pidfd before `go`, so an instant exit is still seen on this process.
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except OSError as exc:
            message = f"pidfd_open({self.pid}): {exc.strerror}"
            raise LaunchError(spec.name, "watch", message) from None

    async def go(self, on_change: Callable[[], None]) -> Run:
        """Let PID 1 exec; its Run, which owns everything from here. Raises LaunchError (PID 1
        failed before exec) after `abort`."""
        if self._done or self._started is None:
            raise LaunchError(self.spec.name, "go", "go() after go() or abort()")
        try:
            await self._started.go()
            self.trace.mark(EXEC_SEEN)
            self.trace.extend(self._started.trace)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return Run(
            self.host, self.spec.name, self.pid, self.pidfd, own_child=True, cgroup=self.cgroup,
            capture=self.capture, oom_base=self.oom_base, started_at=self.host.wall(),
            on_change=on_change, err_capture=self.err_capture, output=self.output,
        )  # fmt: skip

    def abort(self) -> None:
        """Undo the launch: nothing of it is left (a no-op once gone to a Run)."""
        if self._done:
            return
        self._done = True
        for opened in (self.capture, self.err_capture):
            if opened is not None:
                opened.close(drain=True)
        started, self._started = self._started, None
        if started is not None:
            started.abort()  # PID 1 reads EOF instead of Go; the launcher's fds are closed
        discard_cgroup(self.cgroup, self.spec.name)
        if self.pid > 0:
            proc.kill_and_reap(self.pid)
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def on_output_closed(run: Run, callback: Callable[[int], None]) -> None:
    """Call `callback` (with the log's `written`) once every output pipe of `run` is closed and
    drained: its output is all in the log (and the journal)."""
    captures = [c for c in (run.capture, run.err_capture) if c is not None]
    left = len(captures)

    def closed(written: int) -> None:
        nonlocal left
        left -= 1
        if not left:
            callback(written)

    for capture in captures:
        capture.on_closed = closed


def output_of(host: Host, spec: UnitSpec) -> Output:
    """Where a launch of `spec` sends its output: the unit's `output`, else the daemon's."""
    output = spec.unit.service.output or host.output
    # A host without a journal socket (the engine's tests) keeps output in the file.
    return output if host.journal is not None or not to_journal(output) else "file"


def _sinks(host: Host, sink: RotatingLog, output: Output) -> tuple[Sink, Sink | None]:
    """(stdout's sink, stderr's or None when stderr shares stdout's pipe)."""
    if not to_journal(output) or host.journal is None:
        return sink, None
    both = output == "both"
    out = JournalStream(host.journal, sink, jnl.PRIORITY_STDOUT, both=both)
    return out, JournalStream(host.journal, sink, jnl.PRIORITY_STDERR, both=both)


def _tell_pid(pid: int, *sinks: Sink | None) -> None:
    # Before the service can write (the launch's go, or now for an adopted run).
    for sink in sinks:
        if isinstance(sink, JournalStream):
            sink.pid = pid


def _reopen_output(
    host: Host, sink: Sink, unit: str, *, pid: int, fd: int, inode: int
) -> Capture | None:
    """The adopted run's output pipe, through PID 1's fds; says in the log when the recorded
    fd was not that pipe (and why), and whether the pipe was found elsewhere."""
    problem = check_fd(pid, fd, inode)
    capture = Capture.reopen(host.loop, sink, pid, fd, inode)
    if problem is None and capture is not None:
        return capture
    # Without a problem, the fd changed between the check and the open.
    problem = problem or FdProblem(fd, "unreadable", "changed while being opened")
    detail = {"unit": unit, "fd": fd, "inode": inode, "reason": problem.reason,
              "found": problem.found}  # fmt: skip
    if capture is not None:
        log.info("unit.output_reopened", via_fd=capture.kept_fd, **detail)
    else:
        # Nobody drains the pipe now: a writer blocks once its buffer is full (if PID 1 still
        # holds a read end) or gets EPIPE (if nobody does).
        log.warning("unit.output_lost", **detail,
                    hint="the service's output is no longer captured: restart the unit "
                    "(sandboxctl restart UNIT) to capture it again")  # fmt: skip
    return capture


def _fresh_cgroup(cgroups: Manager, unit: str, limits: Limits) -> UnitCgroup:
    try:
        return cgroups.create(unit, limits)
    except CgroupError:
        leftover = cgroups.open(unit)
        if leftover is None or not leftover.is_populated():
            raise
    # Processes of an earlier run nobody watches (e.g. a state file lost): they must not
    # share the new run's limits, and they would keep the cgroup from being reused.
    log.warning("unit.leftover_killed", unit=unit, pids=leftover.pids())
    leftover.kill_all()
    return cgroups.create(unit, limits)


def discard_leftover(cgroups: Manager, unit: str, **context: object) -> None:
    """No run is watched in `unit`'s cgroup: kill whatever it still holds and remove it. A
    process in it is a run no record names (its record had not reached the disk when the
    daemon died, store.py): the cgroup is the truth, so a unit never runs twice."""
    try:
        leftover = cgroups.open(unit)
        if leftover is not None and leftover.is_populated():
            log.warning("unit.leftover_killed", unit=unit, pids=leftover.pids(), **context)
    except CgroupError as exc:  # unreadable: the next launch in it says so, with the unit
        log.error("unit.cgroup_leftover", unit=unit, error=str(exc))
        return
    if leftover is not None:
        discard_cgroup(leftover, unit)


def discard_cgroup(cgroup: UnitCgroup, unit: str) -> None:
    try:
        cgroup.destroy()
    except CgroupError as exc:
        log.error("unit.cgroup_leftover", unit=unit, error=str(exc))
