"""Files in the daemon's own directories, reached without following any symlink.

The daemon's state, log and data directories belong to root alone (supervisor/daemondirs.py),
but what is in them may still have been put there by someone else: by whoever could write a
directory before its mode was tightened, or by a root process on purpose. Appending a
service's output to a planted `web.log -> /etc/shadow`, or to a hard link of it, would hand
the service a host file. So here:
- a directory is opened with no symlink in any component (`open_nofollow`), and the files in
  it relative to that fd with O_NOFOLLOW: renaming a directory or planting a link after the
  daemon looked changes nothing it does;
- a file the daemon writes or trusts must be a regular file it owns, with no other hard link;
  it is given the mode asked for and the group of its directory;
- state is written atomically: a fresh temp file (O_EXCL), fsync, rename within the directory;
  a file rewritten often (a unit's record) through a kept temp exchanged with it instead.

Every failure is an OSError whose strerror says what is wrong in words a log line can carry.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from supervisor.linux.syscalls import open_nofollow, rename_exchange

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY


def _refused(code: int, what: str, path: str) -> OSError:
    return OSError(code, what, path)


def symlink_in(path: str) -> tuple[str, str] | None:
    """The first component of the absolute `path` that is a symlink, and its target; None if
    none is (or the path stops existing first). For messages: it names what to fix."""
    current = ""
    for part in [p for p in path.split("/") if p]:
        current += "/" + part
        try:
            if stat.S_ISLNK(os.lstat(current).st_mode):
                return current, os.readlink(current)
        except OSError:
            return None
    return None


_MAX_LINKS = 40  # the kernel's own limit on symlinks in one lookup (ELOOP beyond it)


def resolve_in_root(root: str, path: str) -> str | None:
    """The host path of `path` as a process chrooted at `root` would see it, or None if it
    does not exist there (or loops).

    Symlinks are followed as the kernel would after pivot_root: an absolute target starts
    again at `root`, and `..` stops at `root`, so a rootfs's `/bin -> usr/bin` or
    `/etc/alternatives/x -> /usr/bin/y` resolve inside it and never to the host's files. Only
    lstat and readlink are used, on prefixes already resolved, so no host symlink is followed
    either. For offline checks (validate); the launch itself does not rely on it.
    """
    root = root.rstrip("/") or "/"
    todo = [p for p in path.split("/") if p]
    todo.reverse()
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop()
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        current = os.path.join(root, *done, part)
        try:
            st = os.lstat(current)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                return None
            try:
                target = os.readlink(current)
            except OSError:
                return None
            if target.startswith("/"):
                done = []
            todo.extend(reversed([p for p in target.split("/") if p]))
            continue
        if todo and not stat.S_ISDIR(st.st_mode):
            return None  # a file in the middle of the path: ENOTDIR
        done.append(part)
    return os.path.join(root, *done)


def explain(err: OSError, path: str) -> str:
    """`err` from opening `path` as one phrase; names the symlink for ELOOP."""
    if err.errno == errno.ELOOP:
        found = symlink_in(path)
        if found is not None:
            link, target = found
            return f"{link} is a symlink (to {target}), and sandboxd follows none here"
        return "it has a symlink in its path, and sandboxd follows none here"
    return err.strerror or str(err)


def open_dir(path: str | os.PathLike[str], mkdir_mode: int | None = None) -> int:
    """A read-only fd for the directory `path`, reached without following any symlink.

    With `mkdir_mode`, a missing directory is created first (its missing parents too, with
    the umask's modes); the open after that is what is trusted, not the creation by name.
    """
    name = os.fspath(path)
    try:
        try:
            return open_nofollow(name, _DIR_FLAGS)
        except FileNotFoundError:
            if mkdir_mode is None:
                raise
        os.makedirs(name, mkdir_mode, exist_ok=True)
        return open_nofollow(name, _DIR_FLAGS)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise _refused(errno.ELOOP, explain(err, name), name) from None


@contextlib.contextmanager
def directory(path: str | os.PathLike[str], mkdir_mode: int | None = None) -> Iterator[int]:
    """`open_dir` for the length of a `with` block."""
    fd = open_dir(path, mkdir_mode)
    try:
        yield fd
    finally:
        os.close(fd)


def check_owned(
    fd: int, name: str, mode: int | None, dir_fd: int | None = None, owner: int | None = None
) -> None:
    """Make sure the file or directory open as `fd` is ours (or `owner`'s: a reader that is not
    the daemon names the daemon's uid), then give it `mode` and the group of `dir_fd` (each if
    given). OSError saying what is wrong if it is not."""
    st = os.fstat(fd)
    if st.st_uid != (os.geteuid() if owner is None else owner):
        raise _refused(errno.EPERM, f"owned by uid {st.st_uid}, not by this daemon", name)
    if stat.S_ISREG(st.st_mode) and st.st_nlink != 1:
        # A hard link planted in our directory would make us write into its other name.
        raise _refused(errno.EMLINK, f"has {st.st_nlink - 1} other hard link(s)", name)
    if dir_fd is not None:
        gid = os.fstat(dir_fd).st_gid
        if st.st_gid != gid:
            os.fchown(fd, -1, gid)
    if mode is not None and stat.S_IMODE(st.st_mode) != mode:
        os.fchmod(fd, mode)


def open_owned(
    dir_fd: int, name: str, flags: int, mode: int | None = None, owner: int | None = None
) -> int:
    """Open (or create, with O_CREAT) the regular file `name` in the directory `dir_fd`: never
    through a symlink, never a FIFO or device, never a file someone else (than us, or `owner`)
    owns or links to. With `mode`, the file ends up with that mode and the directory's group."""
    try:
        # O_NONBLOCK: opening a planted FIFO must fail or return at once, not hang the daemon.
        fd = os.open(
            name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode or 0o600, dir_fd=dir_fd
        )
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _refused(
                errno.ELOOP, "is a symlink, and sandboxd follows none here", name
            ) from None
        if err.errno == errno.ENXIO:  # a FIFO without a reader, or a socket
            raise _refused(errno.ENXIO, "is not a regular file", name) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refused(errno.EINVAL, "is not a regular file", name)
        check_owned(fd, name, mode, dir_fd if mode is not None else None, owner)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_atomic(dir_fd: int, name: str, data: bytes, mode: int = 0o600) -> None:
    """Replace `name` in `dir_fd` with `data`: a crash leaves the old or the new file whole."""
    tmp = f".{name}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)  # a leftover (or planted) temp: O_EXCL needs it gone
    fd = open_owned(dir_fd, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        # ENOSPC and the like: `name` is untouched; the torn temp would only hold on to
        # the space (or inode) that the next attempt needs.
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


# renameat2 errors that mean "no exchange here", not a failed write: `name` does not exist yet
# (a first write), the filesystem cannot exchange (EINVAL), the kernel predates it (ENOSYS).
_NO_EXCHANGE = frozenset({errno.ENOENT, errno.EINVAL, errno.ENOSYS})


def write_swapped(dir_fd: int, name: str, data: bytes, mode: int = 0o600) -> None:
    """`write_atomic` for a file rewritten again and again: `data` goes into the file's kept
    temp (.NAME.tmp), is fsynced, and the temp is exchanged with `name` (RENAME_EXCHANGE);
    the temp, which then holds the old content, is emptied and kept for the next write.

    Why not a fresh temp each time: that allocates an inode per write and frees the replaced
    one. ext4 without a journal skips, at every inode allocation, each free inode of the
    block group that was freed in the last ~30 s (recently_deleted() in ialloc.c, read from
    the inode table each time): a storm of saves, or other programs' churn in the same group
    (everyone's files under /tmp), made each O_CREAT cost 0.1-0.5 ms of CPU where a quiet
    directory's cost 0.02 ms. Rewriting the kept temp allocates nothing.

    A crash leaves `name` whole, old or new, as with `write_atomic`; the temp may hold
    anything. A temp that is not our plain file (planted, linked) is never written through:
    the write falls back to `write_atomic`, which removes it first. Where the exchange is
    not possible (no `name` yet, a filesystem without it) the temp is renamed over `name`."""
    tmp = f".{name}.tmp"
    try:
        fd = open_owned(dir_fd, tmp, os.O_WRONLY | os.O_CREAT, mode)
    except OSError:
        write_atomic(dir_fd, name, data, mode)
        return
    try:
        view = memoryview(data)
        while view:
            view = view[os.pwrite(fd, view, len(data) - len(view)) :]
        os.ftruncate(fd, len(data))  # an older content may have been longer
        os.fsync(fd)
    except BaseException:
        # ENOSPC and the like: `name` is untouched; the torn temp's blocks would only hold
        # on to the space the next attempt needs.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        raise
    finally:
        os.close(fd)
    try:
        rename_exchange(dir_fd, tmp, name)
    except OSError as err:
        if err.errno not in _NO_EXCHANGE:
            raise
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    _empty(dir_fd, tmp)


def _empty(dir_fd: int, tmp: str) -> None:
    """Empty the kept temp after an exchange: its old content would otherwise stay in memory
    (a page per unit on a tmpfs) until the next write. What was exchanged out of `name` and
    is not our plain file (a planted link) is removed instead, never opened through."""
    try:
        fd = open_owned(dir_fd, tmp, os.O_WRONLY)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        return
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def read_owned(dir_fd: int, name: str) -> bytes:
    """The whole content of the regular file `name` in `dir_fd`, if it is ours (open_owned)."""
    fd = open_owned(dir_fd, name, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
