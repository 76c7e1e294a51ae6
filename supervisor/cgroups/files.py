"""Reading and writing cgroupfs files, with errors that name the path and the value.

Every write to a kernel file goes through `write()`, so the error a user sees is
`failed to write '268435456' to /sys/fs/cgroup/x/memory.max: Device or resource busy`, never a
bare `OSError`. Readers parse the few formats cgroupfs uses (a number or "max", one pid per
line, "key value" lines) and work the same against a tmp dir standing in for cgroupfs, which
is how the unit tests exercise the backends without root.
"""

from __future__ import annotations

import errno
import os
import resource
import time
import weakref
from collections.abc import Callable

from supervisor.errors import CgroupError, CgroupWriteError
from supervisor.linux import threadexit

# v1 reports "no limit" as PAGE_COUNTER_MAX rounded to pages (9223372036854771712), never -1.
V1_UNLIMITED_FLOOR = 1 << 62


def write(path: str, value: str | int) -> None:
    """Write `value` to a cgroup file in one write(2).

    cgroupfs parses each write(2) as a whole command, so the value must not be split (which
    buffered text I/O may do); O_TRUNC/O_CREAT are left out because cgroupfs has no use for
    them and a fake cgroupfs in a test dir is a pre-created regular file.
    """
    text = str(value)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
            if not _is_kernel_file(fd):
                os.ftruncate(fd, len(text.encode()))
        finally:
            os.close(fd)
    except OSError as err:
        raise CgroupWriteError(path, text, err) from err


def _is_kernel_file(fd: int) -> bool:
    # A tmp dir standing in for cgroupfs holds regular files that keep stale bytes past a
    # shorter rewrite; cgroupfs files report size 0. Truncating only the former keeps the fake
    # faithful ("write then read back the value") without a test-only code path.
    return os.fstat(fd).st_size == 0


def read(path: str) -> str:
    # Raw os.read, not open(): half the cost per file, which counts when a status of 1000
    # units reads 1000 files.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(fd)
    except OSError as err:
        raise _read_error(path, err) from err
    return b"".join(chunks).decode("ascii").strip()


# Every KeptFile that may hold an fd, and whether new ones may: see stop_keeping.
_kept: weakref.WeakSet[KeptFile] = weakref.WeakSet()
_keeping = True
# Whether a view read a kept file since the last `release_if_unread`, and who is told when a
# file keeps an fd (the engine's timer that gives them back: engine/keptrelease.py).
_read_since_check = False
_on_kept: Callable[[], None] | None = None


def on_kept(callback: Callable[[], None] | None) -> None:
    """Have `callback` called whenever a view file keeps an fd (None: nobody is told)."""
    global _on_kept  # noqa: PLW0603 - one hook for the process, set by the engine
    _on_kept = callback


def release_if_unread() -> bool:
    """Close every kept fd unless a view read one since the last call; True when nothing is
    kept any more. Each kept cgroup file costs the kernel ~4.8 KiB for as long as it is open
    (its seq_file keeps a page-sized buffer after the first read, plus the file, the
    kernfs_open_file and the seq_file: measured 4.1 + 0.7 KiB), so the four or five files a
    unit a `top` frame keeps are ~20 KiB per idle sandbox; views that went quiet give that
    back, and their next read opens the files afresh and keeps them again."""
    global _read_since_check  # noqa: PLW0603 - the views' one flag for the process
    if _read_since_check:
        _read_since_check = False
        return False
    for kept in list(_kept):
        kept.close()
    return True


def stop_keeping() -> None:
    """The daemon is short of fds (a launch found too few free): close every kept view file
    and keep none from now on, so that views never hold fds a waiting launch needs. An fd
    freed by a removed unit would otherwise be the lowest free number, taken by the next
    status read and kept (under half the limit), and the launch would wait for good. For the
    rest of the daemon's life each view read opens and closes its file, as `read` does."""
    global _keeping  # noqa: PLW0603 - one switch for the process, turned off once
    _keeping = False
    for kept in list(_kept):
        kept.close()


class KeptFile:
    """A cgroup file the views read again and again (each unit's memory in every status list,
    four or five files per unit in every `top` frame): the first read keeps its fd, later reads
    are one pread from offset 0, which cgroupfs answers afresh. Measured on 1000 cgroups (v1):
    2 ms for a file of each, against 25 ms with open, read and close. `close` before the cgroup
    goes (`destroy`). An fd is kept only while the daemon holds fewer than half of its fd
    limit, and never once a launch found the fds short (stop_keeping), so views never take the
    fds that launches and the API need (linux/fdlimit.py); past that, each read opens and
    closes as `read` does."""

    # Slots, and a weak reference (_kept holds them weakly): per unit, for its run's life.
    __slots__ = ("__weakref__", "_fd", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def read(self) -> str:
        return self._bytes().decode("ascii").strip()

    def read_int(self) -> int:
        raw = self._bytes()
        try:
            return int(raw)  # int() takes ASCII bytes and their whitespace
        except ValueError:
            return _parse_int(self.path, raw.decode("ascii", "replace").strip())

    def _bytes(self) -> bytes:
        global _read_since_check  # noqa: PLW0603 - see release_if_unread
        _read_since_check = True
        fd = self._fd
        if fd is not None:  # the common case, kept lean: 1000 units read per frame
            try:
                data = os.pread(fd, _CHUNK, 0)
            except OSError as err:
                self.close()  # the next read opens afresh
                raise _read_error(self.path, err) from err
            if len(data) < _CHUNK:  # a short read is the end of a cgroupfs file
                return data
        return self._open_and_read()

    def _open_and_read(self) -> bytes:
        fd = self._fd
        if fd is None:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as err:
                raise _read_error(self.path, err) from err
            if _keeping and fd < resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2:
                self._fd = fd
                _kept.add(self)
                if _on_kept is not None:
                    _on_kept()
        try:
            chunks = [os.pread(fd, _CHUNK, 0)]
            while len(chunks[-1]) == _CHUNK:
                chunks.append(os.pread(fd, _CHUNK, _CHUNK * len(chunks)))
        except OSError as err:
            self._fd = None  # closed below; the next read opens afresh
            raise _read_error(self.path, err) from err
        finally:
            if fd != self._fd:
                os.close(fd)
        return b"".join(chunks)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:  # a cgroup object dropped without destroy (tests, lookups)
        self.close()


_CHUNK = 65536


def _read_error(path: str, err: OSError) -> CgroupError:
    reason = os.strerror(err.errno) if err.errno else str(err)
    error = CgroupError(f"failed to read {path}: {reason}")
    error.__cause__ = err
    return error


def read_limit(path: str) -> int | None:
    """A number, or None for "max" (v2) and v1's huge "unlimited" values."""
    text = read(path)
    if text in ("max", "-1"):
        return None
    value = _parse_int(path, text)
    return None if value >= V1_UNLIMITED_FLOOR else value


def read_int(path: str) -> int:
    return _parse_int(path, read(path))


def read_keyed(path: str) -> dict[str, int]:
    """Parse "key value" lines (memory.events, cpu.stat, memory.oom_control, ...)."""
    return parse_keyed(read(path), path)


def parse_keyed(text: str, path: str = "<text>") -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = _parse_int(path, parts[1])
    return out


def read_pids(path: str) -> list[int]:
    """The pids listed in a cgroup.procs/tasks file; [] if the cgroup is gone."""
    try:
        return [_parse_int(path, line) for line in read(path).split()]
    except CgroupError as err:
        if isinstance(err.__cause__, FileNotFoundError):
            return []
        raise


def _parse_int(path: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CgroupError(f"unexpected content in {path}: {text!r}") from None


def mkdir(path: str) -> bool:
    """Create one cgroup directory; True if it was created, False if it already existed."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        return False
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise CgroupError(f"failed to create cgroup {path}: {reason}") from err
    return True


def rmdir(path: str, *, timeout: float = 1.0) -> None:
    """Remove a cgroup directory; fine if already gone.

    rmdir says EBUSY while tasks are in the cgroup, also for a short while after the last
    process was killed: its threads leave their cgroups one by one on their way out, after
    cgroup.procs stopped listing it. Then the threads the cgroup still lists are waited for
    through their pidfds (linux/threadexit.py: the kernel wakes us as each one has exited), and
    rmdir is tried again. A task past its exit that the kernel still counts but no longer lists
    (it leaves at its last context switch, after its pidfd read) has nothing to wait on: then
    rmdir is tried again after 1 ms. All of it within `timeout` seconds. A cgroup with child
    cgroups, which no wait empties, fails at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as err:
            leaving = _leaving(path) if err.errno == errno.EBUSY else None
            left = deadline - time.monotonic()
            if leaving is None or left <= 0:
                raise _rmdir_failed(path, err) from err
            if not leaving:
                time.sleep(min(0.001, left))
            elif not threadexit.wait_gone(leaving, left):
                raise _rmdir_failed(path, err) from err


def _leaving(path: str) -> set[int] | None:
    """The threads a busy cgroup still holds (v1 `tasks`, v2 `cgroup.threads`: cgroup.procs
    no longer lists a process whose leader has exited); None if it has child cgroups, which
    no wait removes."""
    if child_dirs(path):
        return None
    return {*read_pids(os.path.join(path, "tasks")),
            *read_pids(os.path.join(path, "cgroup.threads"))}  # fmt: skip


def rmdir_if_empty(paths: list[str]) -> bool:
    """Remove the cgroup directories `paths` in order while the kernel lets it; False at the
    first it refuses as busy (tasks or child cgroups in it, or tasks just killed and not yet
    torn down), which is left with those after it. One already gone counts as removed."""
    for path in paths:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            continue
        except OSError as err:
            if err.errno == errno.EBUSY:
                return False
            raise _rmdir_failed(path, err) from err
    return True


def _rmdir_failed(path: str, err: OSError) -> CgroupError:
    reason = os.strerror(err.errno) if err.errno else str(err)
    return CgroupError(f"failed to remove cgroup {path}: {reason}")


def listdir_files(path: str) -> frozenset[str]:
    try:
        return frozenset(os.listdir(path))
    except OSError:
        return frozenset()


def child_dirs(path: str) -> list[str]:
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []
