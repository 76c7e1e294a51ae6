"""The `exec = [...]` health probe: a command run inside the sandbox, watched by pidfd.

The command is entered into the sandbox exactly as `sandboxctl exec` does it (sandbox/enter.py:
PID 1's namespaces, root, cwd, uid/gid, capabilities, no_new_privs, seccomp, environment),
except for its cgroup: it joins a *probe sub-cgroup* below the unit's, in every hierarchy the
unit has. So it counts against the unit's limits (memory, pids, cpu are hierarchical), and the
whole tree it may spawn (double forks, `setsid`, daemons) can be killed without touching the
service: freeze the sub-cgroup, SIGKILL everything listed, thaw, until it is empty (or
`cgroup.kill` where the kernel has it). A process group or a walk of /proc children would miss
whatever re-parented itself to the sandbox's PID 1; cgroup membership is inherited and cannot
be left without privileges the probe does not have.

The daemon forks the probe itself (single-threaded, checked; nothing awaited between entering
the PID namespace for the fork and leaving it), exactly once per probe run, and never waits
for it: its exit arrives through a pidfd on the event loop, its output through a pipe. After
every run, anything left in the sub-cgroup is killed; on `close()` (the run ends) the hung
child, if any, is killed and reaped later from the loop, and the sub-cgroup is removed.

enter.py's `inspect`, `_prepare` and `_child` are reused as they are (the last two are private
there: the module's owner is asked to make them public, with `sandboxctl exec` unchanged).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import signal
import threading
from collections.abc import Sequence

from supervisor.cgroups import UnitCgroup, files, teardown
from supervisor.engine.probes import ProbeResult, truncate
from supervisor.errors import CgroupError
from supervisor.linux import netns
from supervisor.linux.syscalls import NAMESPACE_FLAGS, REAL
from supervisor.sandbox import enter

SUBGROUP = "sandboxd-probe"
OUTPUT_KEEP = 2048  # bytes of probe output kept (the rest is read and dropped)
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                  signal.SIGQUIT, signal.SIGCHLD)  # fmt: skip


class ProbeCgroup:
    """`<unit cgroup>/sandboxd-probe` in each of the unit's hierarchies."""

    def __init__(self, unit: UnitCgroup) -> None:
        self.dirs = tuple(os.path.join(os.path.dirname(p), SUBGROUP) for p in unit.procs_files())
        for path in self.dirs:
            files.mkdir(path)
            for name in ("cpuset.cpus", "cpuset.mems"):  # v1 cpuset starts empty: inherit
                mine, parents = os.path.join(path, name), os.path.join(path, "..", name)
                if os.path.exists(mine) and not files.read(mine):
                    files.write(mine, files.read(parents))

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.dirs:
            with contextlib.suppress(CgroupError, OSError):
                found.update(files.read_pids(os.path.join(path, "cgroup.procs")))
        return sorted(found)

    def _set(self, name: str, values: tuple[str, str], frozen: bool) -> None:
        for path in self.dirs:
            if os.path.exists(os.path.join(path, name)):
                files.write(os.path.join(path, name), values[0] if frozen else values[1])

    def kill(self) -> None:
        for path in self.dirs:
            if os.path.exists(os.path.join(path, "cgroup.kill")):
                files.write(os.path.join(path, "cgroup.kill"), 1)
                teardown.wait_until(lambda: not self.pids(), teardown.KILL_TIMEOUT)
                return
        teardown.freeze_and_kill(
            self.dirs[0] if self.dirs else SUBGROUP,
            self.pids,
            lambda: self._freeze(True),
            lambda: self._freeze(False),
        )

    def _freeze(self, frozen: bool) -> None:
        self._set("freezer.state", ("FROZEN", "THAWED"), frozen)
        self._set("cgroup.freeze", ("1", "0"), frozen)

    def remove(self) -> None:
        if self.pids():
            self.kill()
        for path in self.dirs:
            files.rmdir(path)


class ExecProbe:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pid: int,
        argv: Sequence[str],
        cgroup: UnitCgroup | None,
    ) -> None:
        self.loop, self.pid, self.argv, self._unit_cgroup = loop, pid, list(argv), cgroup
        self._cgroup: ProbeCgroup | None = None
        self._child: tuple[int, int] | None = None  # (pid, pidfd) not yet reaped

    async def run(self, timeout: float) -> ProbeResult:
        loop = self.loop
        try:
            child, pidfd, out = self._spawn()
        except (enter.EnterError, OSError, CgroupError) as exc:
            return ProbeResult(False, truncate(f"exec: cannot start: {exc}"))
        self._child = (child, pidfd)
        output = bytearray()
        exited: asyncio.Future[None] = loop.create_future()

        def ended() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, ended)

        def readable() -> None:
            if _collect(out, output):
                loop.remove_reader(out)  # EOF before the exit (stdout closed): stop polling

        loop.add_reader(out, readable)
        timed_out = False
        try:
            async with asyncio.timeout(timeout):
                await exited
        except TimeoutError:
            timed_out = True
            self._kill_tree()
        finally:
            loop.remove_reader(pidfd)
            loop.remove_reader(out)
            _collect(out, output)
            os.close(out)
            self._kill_leftovers()
        status = self._reap()
        if timed_out:
            why = f"timed out after {timeout:g}s, killed with its process tree"
            return ProbeResult(False, truncate(f"{why}; output: {_text(output)}"))
        code = os.waitstatus_to_exitcode(status) if status is not None else None
        text = _text(output)
        if code == 0:
            return ProbeResult(True, truncate(text))
        how = f"exit code {code}" if code is not None and code >= 0 else f"signal {-(code or 0)}"
        return ProbeResult(False, truncate(f"{how}: {text}" if text else how))

    def _spawn(self) -> tuple[int, int, int]:
        if self._unit_cgroup is None:
            raise OSError("the unit has no cgroup to run the probe in")
        if threading.active_count() != 1:  # STYLE rule 6
            raise OSError(f"refusing to fork: the daemon has {threading.active_count()} threads")
        if self._cgroup is None:
            self._cgroup = ProbeCgroup(self._unit_cgroup)
        target = dataclasses.replace(enter.inspect(self.pid), cgroup_dirs=self._cgroup.dirs)
        pidfd = os.pidfd_open(self.pid)
        try:
            prep = enter._prepare(target, pidfd)  # private: see the module docstring
        except BaseException:
            os.close(pidfd)
            raise
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        try:
            in_pid_ns = bool(target.clone_flags & NAMESPACE_FLAGS["pid"])
            enter_pid = (
                netns.briefly_in(prep.pid_ns, "pid") if in_pid_ns else contextlib.nullcontext()
            )
            gc_was = gc.isenabled()
            gc.disable()  # no finalizer may run in the child
            try:
                with enter_pid:
                    child = os.fork()
                    if child == 0:
                        _child_main(target, prep, self.argv, devnull, write_fd)
            finally:
                if gc_was:
                    gc.enable()
            child_fd = os.pidfd_open(child)  # our unreaped child: cannot be another process
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            for fd in (prep.pidfd, prep.pid_ns, prep.root, prep.cwd, *prep.procs, devnull,
                       write_fd):  # fmt: skip
                os.close(fd)
        return child, child_fd, read_fd

    def _kill_tree(self) -> None:
        if self._cgroup is not None:
            with contextlib.suppress(CgroupError, OSError):
                self._cgroup.kill()
        if self._child is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._child[1], signal.SIGKILL)

    def _kill_leftovers(self) -> None:
        if self._cgroup is not None and self._cgroup.pids():
            with contextlib.suppress(CgroupError, OSError):
                self._cgroup.kill()

    def _reap(self) -> int | None:
        """The child's wait status if it has exited (and is now reaped), else None; a child
        still around is reaped later from the loop when its pidfd says it is gone."""
        if self._child is None:
            return None
        pid, pidfd = self._child
        self._child = None
        got, status = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            os.close(pidfd)
            return status
        _reap_later(self.loop, pid, pidfd)
        return None

    def close(self) -> None:
        self._kill_tree()
        self._reap()
        if self._cgroup is not None:
            with contextlib.suppress(CgroupError, OSError):
                self._cgroup.remove()
            self._cgroup = None


def _child_main(
    target: enter.Target, prep: enter._Prepared, argv: list[str], devnull: int, out: int
) -> None:
    """After fork: stdio, signals, then enter.py's child path (exec, or _exit)."""
    try:
        signal.set_wakeup_fd(-1)  # the daemon's loop must never hear this process's signals
        for signum in _RESET_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        enter._child(target, prep, argv, target.env, REAL)
    finally:
        os._exit(enter.EXIT_CANNOT_ENTER)


def _collect(fd: int, into: bytearray) -> bool:
    """Read what is there (keeping the first OUTPUT_KEEP bytes); True at end of file."""
    while True:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        if not data:
            return True
        if len(into) < OUTPUT_KEEP:
            into += data[: OUTPUT_KEEP - len(into)]


def _text(output: bytearray) -> str:
    return output.decode("utf-8", errors="replace").strip()


def _reap_later(loop: asyncio.AbstractEventLoop, pid: int, pidfd: int) -> None:
    def reap() -> None:
        loop.remove_reader(pidfd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        os.close(pidfd)

    try:
        loop.add_reader(pidfd, reap)
    except RuntimeError:  # the loop is closing: the daemon exits and init reaps
        os.close(pidfd)
