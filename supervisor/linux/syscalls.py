"""The only place that makes raw system calls: a `Syscalls` Protocol, libc, and a recording fake.

Code that unshares, mounts, pivots, drops capabilities or loads seccomp takes a `Syscalls`
object, so unit tests (no root) can assert the order of namespace and mount operations with
`linux.fake.RecordingSyscalls`, and the launcher runs them for real with `REAL`.

Every method raises `OSError(errno, strerror, path)` on failure, never returns -1: the launcher
turns that into `{stage, errno, message}` for the daemon: a child never fails silently.

Python 3.11 has no os.unshare/os.setns/os.mount, hence ctypes. Everything here is safe to call
in a forked child of a single-threaded process: no locks, no logging, no allocation beyond
Python's own.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stub: the C half of signal.py
import _socket
import contextlib
import ctypes
import errno
import fcntl
import os
import resource
import signal
import stat
import struct
from collections.abc import Callable, Iterator
from typing import Literal, NamedTuple, NoReturn, Protocol, TypeVar

from supervisor.linux import nsclone

# clone(2) namespace flags.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
NAMESPACE_FLAGS = {
    "mount": CLONE_NEWNS,
    "cgroup": CLONE_NEWCGROUP,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "net": CLONE_NEWNET,
}
# /proc/<pid>/ns/<file> for each namespace name.
NAMESPACE_FILES = {
    "mount": "mnt",
    "cgroup": "cgroup",
    "uts": "uts",
    "ipc": "ipc",
    "user": "user",
    "pid": "pid",
    "net": "net",
}

# mount(2) flags.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MNT_DETACH = 0x2
# The per-mount flags statvfs reports with the same values as mount(2)'s; a bind remount must
# carry them over (see LibcSyscalls.mount_flags).
PRESERVED_MOUNT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2

_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# openat2(2) <linux/openat2.h>: refuse a symlink in any component of the path (magic links
# such as /proc/self/fd/N included).
RESOLVE_NO_SYMLINKS = 0x04
# Resolve as if the dirfd were "/" (an absolute link or ".." stays inside it), cross no mount
# point, follow no magic link: how a file inside an untrusted tree is reached (write_in_root).
RESOLVE_IN_ROOT = 0x10
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS
AT_FDCWD = -100

# The new mount API (<linux/mount.h>): a detached copy of a tree, its attributes, attaching it.
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_IDMAP = 0x100000

# Syscalls glibc has no wrapper for (or only recently): numbers per architecture. openat2 is
# 437 everywhere (syscalls added since 5.1 share one table).
_SYSCALL_NUMBERS = {
    "x86_64": {"pivot_root": 155, "capset": 126, "capget": 125, "openat2": 437},
    "aarch64": {"pivot_root": 41, "capset": 91, "capget": 90, "openat2": 437},
}
# The machine, as platform.machine() says it: that module is not imported here, because this
# one is loaded by the fork server, and each byte of its heap makes forking a launcher and PID 1
# dearer (their page tables are copied).
_MACHINE = os.uname().machine
# Added since 5.1, so one number on every architecture, like openat2.
_OPEN_TREE, _MOVE_MOUNT, _MOUNT_SETATTR = 428, 429, 442
_FSOPEN, _FSCONFIG, _FSMOUNT = 430, 431, 432
_FSOPEN_CLOEXEC = _FSMOUNT_CLOEXEC = 1
_FSCONFIG_CMD_CREATE = 6

# <linux/sockios.h>, <net/if.h>
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, then ifr_flags

FileKind = Literal["dir", "file", "link", "other"]
# The held user namespaces' holder (linux/helduserns.py): its nsfs file's name in their dir.
USERNS_HOLDER = "mnt"
_T = TypeVar("_T")
_NS_GET_NSTYPE = 0xB703  # ioctl_ns(2): _IO(0xb7, 0x3)


@contextlib.contextmanager
def namespace_child(enter: Callable[[], None], what: str) -> Iterator[int]:
    """A throwaway child that runs `enter` (an unshare or a setns) and stays in what it entered
    until the block ends, so the caller reaches those namespaces through /proc/<pid>/ (the
    userns holder's root and nsfs file, linux/helduserns.py; a user namespace alone is made
    without a fork, linux/nsclone.py); yields its PID. Raises
    OSError with the child's errno, `what` naming the step. The child exits when our end of
    its pipe closes, and is reaped here."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        for fd in (ready_r, ready_w, hold_r, hold_w):
            os.close(fd)
        raise
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        status = str(errno.EIO).encode()  # anything but an OSError: EIO, never success
        try:
            os.close(ready_r)
            os.close(hold_w)  # or its read below never sees EOF
            enter()
            status = b"0"
        except OSError as err:
            status = str(err.errno or errno.EIO).encode()
        finally:
            os.write(ready_w, status)
            os.read(hold_r, 1)  # EOF: the caller is done with the namespaces (or died)
            os._exit(0)
    os.close(ready_w)
    os.close(hold_r)
    try:
        status = os.read(ready_r, 16)
        if status != b"0":
            code = int(status) if status.isdigit() else errno.ECHILD
            raise OSError(code, f"{what}: {os.strerror(code)}")
        yield pid
    finally:
        os.close(ready_r)
        os.close(hold_w)
        os.waitpid(pid, 0)


def open_held_ns(path: str, nstype: int, dir_fd: int | None = None) -> int | None:
    """An fd of the namespace of kind `nstype` (CLONE_NEW*) whose nsfs file is mounted at
    `path` (relative to `dir_fd` if given), or None if there is none (no file, a plain file,
    another kind of namespace)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        # ENOTTY on any file that is not a namespace's.
        if fcntl.ioctl(fd, _NS_GET_NSTYPE) == nstype:
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


class HolderRoot(NamedTuple):
    """The holder's root directory (linux/helduserns.py), kept open by the daemon and handed
    to its fork server, whose launchers open their range's file relative to it (openat):
    no setns into the holder per launch. `dev`/`ino`: the holder's nsfs file when `fd` was
    opened; a holder found at USERNS_HOLDER with others is not the one `fd` is in (remade
    since), and a launcher then looks its file up the slow way (see Syscalls.hold_userns)."""

    fd: int
    dev: int
    ino: int

    def serves(self, holder: str) -> bool:
        """Whether the holder kept at `holder` (its nsfs file's path) is the one `fd` is in."""
        try:
            st = os.stat(holder)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (self.dev, self.ino)


class Syscalls(Protocol):
    """What the launcher asks of the kernel. All paths are host paths until pivot_root."""

    def unshare(self, flags: int) -> None: ...
    def setns(self, fd: int, nstype: int) -> None: ...
    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None: ...
    def mount_flags(self, path: str) -> int: ...
    def umount2(self, target: str, flags: int) -> None: ...
    def pivot_root(self, new_root: str, put_old: str) -> None: ...
    def chdir(self, path: str) -> None: ...
    def mkdir(self, path: str, mode: int, parents: bool = False) -> None: ...
    def mkdir_nofollow(self, path: str, mode: int) -> None: ...
    def touch(self, path: str) -> None: ...
    def symlink(self, target: str, path: str) -> None: ...
    def write_file(
        self, path: str, data: bytes, create: bool = True, dir_fd: int | None = None
    ) -> None: ...
    def write_in_root(self, root: str, path: str, data: bytes, mode: int) -> None: ...
    def read_file(self, path: str) -> bytes: ...
    def kind(self, path: str, follow: bool = False) -> FileKind | None: ...
    def resolve(self, path: str) -> str: ...
    def open_path(self, path: str, directory: bool = False) -> int: ...
    def open_tree(self, fd: int) -> int: ...
    def mount_setattr(self, fd: int, attr_set: int, userns_fd: int = -1) -> None: ...
    def move_mount(self, fd: int, target: str) -> None: ...
    def fresh_proc_sys(self) -> int: ...
    def chown(self, path: str, uid: int, gid: int) -> None: ...
    def make_userns(self, id_map: str) -> int: ...
    def hold_userns(self, id_map: str, path: str, root: HolderRoot | None = None) -> int: ...
    def open_own_ns(self, kind: str) -> int: ...
    def close(self, fd: int) -> None: ...
    def sethostname(self, name: str) -> None: ...
    def link_up(self, ifname: str) -> None: ...
    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> int: ...
    def capset(self, effective: int, permitted: int, inheritable: int) -> None: ...
    def setgroups(self, gids: list[int]) -> None: ...
    def setresgid(self, gid: int) -> None: ...
    def setresuid(self, uid: int) -> None: ...
    def setrlimit(self, which: int, soft: int, hard: int) -> None: ...
    def seccomp_load(self, bpf: bytes) -> None: ...
    def fork(self) -> int: ...
    def kill_child(self, pid: int) -> None: ...
    def setsid(self) -> None: ...
    def reset_signals(self) -> None: ...
    def close_fds_except(self, keep: set[int]) -> None: ...
    def dup_above(self, fd: int, low: int) -> int: ...
    def dup_to(self, fd: int, target: int) -> None: ...
    def setup_stdio(self, stdout_fd: int, stderr_fd: int) -> None: ...
    def execve(self, path: str, argv: list[str], env: dict[str, str]) -> NoReturn: ...


def _oserror(path: str | None = None) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err), path)


class _SockFprog(ctypes.Structure):
    # `filter` as c_char_p: assigned a bytes object, ctypes stores a pointer to its own buffer
    # (and keeps it alive with the struct), with no copy and no cast call in PID 1.
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


_REGULAR_FILE = stat.S_IFREG | 0o644  # touch()'s mknod mode, computed once at import
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_openat2_missing = False  # set once the kernel said ENOSYS (before 5.6): walk instead


def openat2(dir_fd: int, path: str, flags: int, mode: int, resolve: int) -> int:
    """openat2(2), close-on-exec; OSError(ENOSYS) before Linux 5.6."""
    nr = _SYSCALL_NUMBERS.get(_MACHINE, {}).get("openat2")
    if nr is None:
        raise OSError(errno.ENOSYS, f"openat2: unsupported architecture {_MACHINE}")
    # openat2 rejects a mode without O_CREAT (EINVAL), unlike open(2), which ignores it.
    flags |= os.O_CLOEXEC
    how = _OpenHow(flags, mode if flags & os.O_CREAT else 0, resolve)
    fd = int(
        _libc.syscall(
            ctypes.c_long(nr),
            ctypes.c_long(dir_fd),
            os.fsencode(path),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def write_in_root(root: str, path: str, data: bytes, mode: int) -> None:
    """Write `path` (absolute as the tree names it) inside the directory `root`, resolving
    every component with RESOLVE_IN_ROOT: an untrusted tree's symlinks (/etc -> /tmp/x,
    resolv.conf -> ../../host/file) are followed within `root` and never reach the host.

    A missing top-level parent (an image without /etc) is made with mkdirat on `root`'s fd,
    which follows nothing. Only a regular file is written (a FIFO would block, a device node
    would reach a host device): it is looked at through an O_PATH fd first, which opens
    nothing, then truncated and written; owner root, `mode`. OSError as the kernel says
    (ENOENT: the file's directory is missing inside the tree; EXDEV: a mount is in the way).
    """
    rel = path.lstrip("/")
    parent = os.path.dirname(rel)
    root_fd = open_nofollow(root, os.O_PATH | os.O_DIRECTORY)
    try:
        if parent and "/" not in parent:
            # mkdirat follows no link in its last component: a dangling /etc -> /x gives
            # EEXIST here and ENOENT from the open below, and nothing is created.
            with contextlib.suppress(FileExistsError):
                os.mkdir(parent, 0o755, dir_fd=root_fd)
        try:
            probe = openat2(root_fd, rel, os.O_PATH, 0, IN_ROOT)
        except FileNotFoundError:
            probe = -1  # the file itself is missing (its directory is checked by the open)
        if probe >= 0:
            try:
                kind = os.fstat(probe).st_mode
            finally:
                os.close(probe)
            if not stat.S_ISREG(kind):
                raise OSError(errno.EINVAL, "not a regular file", path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOCTTY | os.O_NONBLOCK
        fd = openat2(root_fd, rel, flags, mode, IN_ROOT)
    finally:
        os.close(root_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the probe: still refused
            raise OSError(errno.EINVAL, "not a regular file", path)
        # Owner and mode first: a refusal there leaves the image's content as it was.
        os.fchown(fd, 0, 0)
        os.fchmod(fd, mode)
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def open_nofollow(path: str, flags: int, mode: int = 0, dir_fd: int = AT_FDCWD) -> int:
    """open(2) `path` without following a symlink in ANY component: OSError(ELOOP) if one is.

    O_NOFOLLOW alone checks only the last component; a symlinked parent (a sandbox replacing
    `shared/app` with a link to /etc) would still be followed. openat2(2) with
    RESOLVE_NO_SYMLINKS checks them all in one call; before Linux 5.6 the path is walked one
    component at a time with O_NOFOLLOW, which refuses the same paths. The fd is close-on-exec.
    """
    global _openat2_missing  # noqa: PLW0603  (a one-way switch: the kernel will not change)
    flags |= os.O_CLOEXEC
    nr = _SYSCALL_NUMBERS.get(_MACHINE, {}).get("openat2")
    if nr is not None and not _openat2_missing:
        # openat2 rejects a mode without O_CREAT (EINVAL), unlike open(2), which ignores it.
        how = _OpenHow(flags, mode if flags & os.O_CREAT else 0, RESOLVE_NO_SYMLINKS)
        fd = int(
            _libc.syscall(
                ctypes.c_long(nr),
                ctypes.c_long(dir_fd),
                os.fsencode(path),
                ctypes.byref(how),
                ctypes.c_size_t(ctypes.sizeof(how)),
            )
        )
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.ENOSYS:
            raise OSError(err, os.strerror(err), path)
        _openat2_missing = True
    return walk_nofollow(path, flags, mode, dir_fd)


def mkdir_nofollow(path: str, mode: int) -> None:
    """mkdir `path` (absolute, normalized) unless it exists, in a parent opened without
    following a symlink in any component, and refuse `path` itself being one: OSError(ELOOP)
    for a link anywhere. A mount point in an untrusted tree (a directory root, an image):
    a link there (DIR/proc -> /etc) would put the sandbox's mount on a host directory.

    Why not realpath before and after the mkdir: that is a Python loop of one lstat per
    component, twice, where this is four syscalls, and the mkdir is made relative to the
    parent that was checked, so a link swapped in between cannot redirect it.
    """
    parent, _, name = path.rpartition("/")
    if not path.startswith("/") or name in ("", ".", ".."):
        raise OSError(errno.EINVAL, "not a normalized absolute path", path)
    dir_fd = open_nofollow(parent or "/", os.O_PATH | os.O_DIRECTORY)
    try:
        with contextlib.suppress(FileExistsError):  # a link there: EEXIST, refused below
            os.mkdir(name, mode, dir_fd=dir_fd)
        if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
    finally:
        os.close(dir_fd)


def walk_nofollow(path: str, flags: int, mode: int = 0, dir_fd: int = AT_FDCWD) -> int:
    """`open_nofollow` without openat2: one O_NOFOLLOW openat per component."""
    parts = [p for p in path.split("/") if p]
    start = "/" if path.startswith("/") else "."
    fd = os.open(start, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        for part in parts[:-1]:
            # O_PATH|O_NOFOLLOW opens a symlink itself (no error): look at what was opened.
            step = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = step
            mode_bits = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode_bits):
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            if not stat.S_ISDIR(mode_bits):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        last = parts[-1] if parts else "."
        opened = os.open(last, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
    finally:
        os.close(fd)
    if flags & os.O_PATH and stat.S_ISLNK(os.fstat(opened).st_mode):
        os.close(opened)
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
    return opened


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


# capset's two 32-bit halves. Made once at import, in the fork server before it forks: ctypes
# builds an array type on its first `_CapData * 2` in a process, ~0.2 ms of class creation that
# every sandbox's PID 1 would otherwise pay in its first (and only) capset.
_CapDataPair = _CapData * 2


class LibcSyscalls:
    """The real thing, through libc (ctypes) and the os module."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._unshare = libc.unshare
        self._unshare.argtypes = [ctypes.c_int]
        self._setns = libc.setns
        self._setns.argtypes = [ctypes.c_int, ctypes.c_int]
        self._mount = libc.mount
        self._mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        self._umount2 = libc.umount2
        self._umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self._sethostname = libc.sethostname
        self._sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        self._prctl = libc.prctl
        self._prctl.argtypes = [
            ctypes.c_int,
            ctypes.c_ulong,
            ctypes.c_ulong,
            ctypes.c_ulong,
            ctypes.c_ulong,
        ]
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._nr = _SYSCALL_NUMBERS.get(_MACHINE, {})

    def unshare(self, flags: int) -> None:
        if self._unshare(flags) != 0:
            raise _oserror()

    def setns(self, fd: int, nstype: int) -> None:
        if self._setns(fd, nstype) != 0:
            raise _oserror()

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        if (
            self._mount(
                source.encode() if source is not None else None,
                target.encode(),
                fstype.encode() if fstype is not None else None,
                flags,
                data.encode() if data is not None else None,
            )
            != 0
        ):
            raise _oserror(target)

    def mount_flags(self, path: str) -> int:
        return os.statvfs(path).f_flag & (PRESERVED_MOUNT_FLAGS | MS_RDONLY)

    def umount2(self, target: str, flags: int) -> None:
        if self._umount2(target.encode(), flags) != 0:
            raise _oserror(target)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        nr = self._nr.get("pivot_root")
        if nr is None:
            raise OSError(38, f"pivot_root: unsupported architecture {_MACHINE}")
        if self._syscall(ctypes.c_long(nr), new_root.encode(), put_old.encode()) != 0:
            raise _oserror(new_root)

    def chdir(self, path: str) -> None:
        os.chdir(path)

    def mkdir(self, path: str, mode: int, parents: bool = False) -> None:
        if parents:
            os.makedirs(path, mode, exist_ok=True)
            return
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            return
        if mode & 0o022:
            # Group or other write (a 1777 /dev/shm), which the umask (022) strips: set on
            # the directory just made, opened without following a link, so no link swapped
            # in for it gets the mode. Never a temporary umask: it is the whole process's.
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fchmod(fd, mode)
            finally:
                os.close(fd)

    def mkdir_nofollow(self, path: str, mode: int) -> None:
        mkdir_nofollow(path, mode)

    def touch(self, path: str) -> None:
        # One mknod of a regular file (no CAP_MKNOD needed for one) rather than an open and a
        # close: a launch makes a mount point per bound file. Whatever exists at `path` is
        # left as it is, a symlink included (mknod never follows the last component). No
        # contextlib.suppress: its Python methods would be first run, so copied on write, in
        # every PID 1.
        try:
            os.mknod(path, _REGULAR_FILE)
        except FileExistsError:
            return

    def symlink(self, target: str, path: str) -> None:
        os.symlink(target, path)

    def write_file(
        self, path: str, data: bytes, create: bool = True, dir_fd: int | None = None
    ) -> None:
        """`data` into `path` (relative to `dir_fd`, an fd of a directory, if given)."""
        flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT | os.O_TRUNC if create else 0)
        fd = os.open(path, flags, 0o644, dir_fd=dir_fd)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def write_in_root(self, root: str, path: str, data: bytes, mode: int) -> None:
        write_in_root(root, path, data, mode)

    def read_file(self, path: str) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def kind(self, path: str, follow: bool = False) -> FileKind | None:
        try:
            mode = (os.stat if follow else os.lstat)(path).st_mode
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(mode):
            return "dir"
        if stat.S_ISLNK(mode):
            return "link"
        return "file" if stat.S_ISREG(mode) else "other"

    def resolve(self, path: str) -> str:
        return os.path.realpath(path)

    def open_path(self, path: str, directory: bool = False) -> int:
        # O_PATH: a handle on the file for mounting it (via /proc/self/fd/N), no read access
        # needed, so it works for the mapped root of a user namespace as the path did.
        return open_nofollow(path, os.O_PATH | (os.O_DIRECTORY if directory else 0))

    def open_tree(self, fd: int) -> int:
        """A detached copy of the mount at `fd` (an O_PATH fd), not its submounts: a mount of
        its own that attributes (an id map) can be set on before it is attached anywhere."""
        flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH
        tree = _libc.syscall(_OPEN_TREE, fd, b"", flags)
        if tree < 0:
            raise _oserror()
        return int(tree)

    def mount_setattr(self, fd: int, attr_set: int, userns_fd: int = -1) -> None:
        attr = _MountAttr(attr_set, 0, 0, max(userns_fd, 0))
        size = ctypes.sizeof(attr)
        if _libc.syscall(_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH, ctypes.byref(attr), size) != 0:
            raise _oserror()

    def move_mount(self, fd: int, target: str) -> None:
        flags = MOVE_MOUNT_F_EMPTY_PATH
        if _libc.syscall(_MOVE_MOUNT, fd, b"", AT_FDCWD, target.encode(), flags) != 0:
            raise _oserror(target)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(path, uid, gid, follow_symlinks=False)

    def fresh_proc_sys(self) -> int:
        """An O_PATH fd of `sys` in a procfs instance of our own (fsopen, fsmount: a mount
        attached nowhere, so no namespace shows it), close-on-exec. Why not /proc/sys: the
        host's procfs keeps one cached /proc/sys/net/ipv4 dentry per live network namespace
        that looked it up, all on one hash chain that the kernel compares one by one under its
        sysctl lock; a new namespace's first look-up walked them all (13-15 ms of CPU with
        ~5900 namespaces on the host). In a fresh instance there is only ours. A net sysctl
        opened through it is still the caller's network namespace's."""
        fs = int(_libc.syscall(_FSOPEN, b"proc", _FSOPEN_CLOEXEC))
        if fs < 0:
            raise _oserror()
        try:
            if _libc.syscall(_FSCONFIG, fs, _FSCONFIG_CMD_CREATE, None, None, 0) != 0:
                raise _oserror()
            mnt = int(_libc.syscall(_FSMOUNT, fs, _FSMOUNT_CLOEXEC, 0))
            if mnt < 0:
                raise _oserror()
        finally:
            os.close(fs)
        try:
            return os.open("sys", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=mnt)
        finally:
            os.close(mnt)

    def make_userns(self, id_map: str) -> int:
        """A new user namespace whose uid and gid maps are `id_map` ("inside outside count"),
        as an fd for setns and MOUNT_ATTR_IDMAP. A process cannot map its own host ids into a
        namespace it made (it has no privilege left in its parent), so a child is cloned into
        one, exiting at once (nsclone.py: no fork, no Python in it), and we (still host root)
        write its maps and open its ns file through its zombie before reaping it."""
        pid = nsclone.exited_child(CLONE_NEWUSER)
        try:
            for name in ("uid_map", "gid_map"):
                self.write_file(f"/proc/{pid}/{name}", id_map.encode(), create=False)
            return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            os.waitpid(pid, 0)

    def hold_userns(self, id_map: str, path: str, root: HolderRoot | None = None) -> int:
        """An fd of the user namespace held for `path`'s range (linux/helduserns.py: the file
        `<base>-<size>` in the holder mount namespace kept at `<dir>/USERNS_HOLDER`), like
        make_userns'; if none is held, a new one with maps `id_map`, held there for the next
        launch. Without a holder (no daemon made one), a new one per launch. One that cannot be
        held still serves this launch: holding only saves the next launch the making. Needs a
        single-threaded caller; it ends in its own mount namespace and cwd, or raises.

        `root` (the fork server's, if it has one): the file is looked up relative to it,
        without entering the holder (a setns there and back was ~0.27 ms of every launch).
        Only a launch that finds nothing there enters it, once: its new namespace is made
        first (the maker needs our /proc), then in the holder the file is looked up again and,
        if still missing, the new one attached (move_mount attaches only in the caller's own
        mount namespace). A `root` whose holder is no longer the one kept at the path (another
        nsfs inode) is not used. One that passes that check yet is stale (the kernel reused the
        inode number for a remade holder) finds nothing - the old holder's files were
        unmounted with it - so the lookup in the holder itself decides: never another range's
        namespace, never a second one stacked on a held file."""
        directory, name = os.path.split(path)
        holder_at = os.path.join(directory, USERNS_HOLDER)
        through_root = root is not None and root.serves(holder_at)
        if root is not None and through_root:
            found = open_held_ns(name, CLONE_NEWUSER, dir_fd=root.fd)
            if found is not None:
                return found
        holder = open_held_ns(holder_at, CLONE_NEWNS)
        if holder is None:
            return self.make_userns(id_map)
        try:
            if not through_root:  # no root to look through: enter to look before making one
                found = self._in_mount_ns(holder, lambda: open_held_ns(name, CLONE_NEWUSER))
                if found is not None:
                    return found
            userns = self.make_userns(id_map)  # here: its maps are written through our /proc
            try:
                tree = self.open_tree(userns)
            except OSError:
                return userns  # cannot be held: it still serves this launch
            try:
                found = self._in_mount_ns(holder, lambda: self._find_or_attach(tree, name))
            finally:
                os.close(tree)
            if found is not None:
                os.close(userns)
                return found
            return userns
        finally:
            os.close(holder)

    def _find_or_attach(self, tree: int, name: str) -> int | None:
        """In the holder: the namespace held at `name`, or None once `tree` is attached there."""
        found = open_held_ns(name, CLONE_NEWUSER)
        if found is None:
            self._attach_held(tree, name)
        return found

    def _in_mount_ns(self, ns: int, body: Callable[[], _T]) -> _T:
        """`body` run in the mount namespace `ns` (its root the cwd there), then back in our
        own and in our cwd. A way back that fails raises: the caller must not go on."""
        own = self.open_own_ns("mnt")
        cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.setns(ns, CLONE_NEWNS)
            try:
                return body()
            finally:
                self.setns(own, CLONE_NEWNS)
                os.fchdir(cwd)
        finally:
            os.close(own)
            os.close(cwd)

    def _attach_held(self, tree: int, name: str) -> None:
        with contextlib.suppress(OSError):  # not held: the next launch makes one again
            # O_CREAT without O_EXCL: an empty file left by a launcher killed before its
            # mount is mounted over as it is.
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
            self.move_mount(tree, name)

    def open_own_ns(self, kind: str) -> int:
        """An fd of the calling thread's namespace `kind` ("mnt", "net"...): a reference that
        keeps it alive after the thread has left it."""
        return os.open(f"/proc/thread-self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)

    def close(self, fd: int) -> None:
        os.close(fd)

    def sethostname(self, name: str) -> None:
        raw = name.encode()
        if self._sethostname(raw, len(raw)) != 0:
            raise _oserror()

    def link_up(self, ifname: str) -> None:
        # SIOCSIFFLAGS on any AF_INET socket of the netns: no netlink library in the child.
        # _socket's C type, not socket.socket (its Python __init__, close and context manager),
        # and the struct compiled at import: a launcher runs this once, on pages it has not
        # written yet, each one a copy-on-write fault.
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        try:
            name = ifname.encode()
            flags = _IFREQ.unpack(fcntl.ioctl(sock, _SIOCGIFFLAGS, _IFREQ.pack(name, 0)))[1]
            fcntl.ioctl(sock, _SIOCSIFFLAGS, _IFREQ.pack(name, flags | _IFF_UP))
        finally:
            sock.close()

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> int:
        res = int(self._prctl(option, arg2, arg3, 0, 0))
        if res < 0:
            raise _oserror()
        return res

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        nr = self._nr.get("capset")
        if nr is None:
            raise OSError(38, f"capset: unsupported architecture {_MACHINE}")
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = _CapDataPair()
        for i in (0, 1):
            data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
            data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
            data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
        if self._syscall(ctypes.c_long(nr), ctypes.byref(header), ctypes.byref(data)) != 0:
            raise _oserror()

    def setgroups(self, gids: list[int]) -> None:
        os.setgroups(gids)

    def setresgid(self, gid: int) -> None:
        os.setresgid(gid, gid, gid)

    def setresuid(self, uid: int) -> None:
        os.setresuid(uid, uid, uid)

    def setrlimit(self, which: int, soft: int, hard: int) -> None:
        resource.setrlimit(which, (soft, hard))

    def seccomp_load(self, bpf: bytes) -> None:
        # The program was compiled by libseccomp in the daemon (linux/seccomp.py); loading the
        # raw BPF here keeps libseccomp's allocations out of the forked child.
        # The bytes object's own buffer (the kernel copies the program during the call), not a
        # create_string_buffer copy: each new length builds a `c_char * len` array type, and
        # every step of Python here is paid again in each PID 1's copy-on-write faults.
        prog = _SockFprog(len(bpf) // 8, bpf)
        if self._prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
            raise _oserror()

    def fork(self) -> int:
        return os.fork()

    def kill_child(self, pid: int) -> None:
        """SIGKILL a child of ours and reap it (one that is already gone is left alone)."""
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)

    def setsid(self) -> None:
        os.setsid()

    def reset_signals(self) -> None:
        # Dispositions set to SIG_IGN survive execve (Python ignores SIGPIPE), the mask is
        # inherited, and the daemon's wakeup fd would carry a child's signal into its loop.
        # _signal, not signal: signal.py turns every number into an enum member, and for the
        # 30-odd real-time signals, which have none, raises and catches a ValueError each:
        # ~140 of a spare's ~800 copy-on-write page faults were that Python, per launch.
        _signal.set_wakeup_fd(-1)
        for sig in _signal.valid_signals():
            # getsignal is a table lookup; only signals Python changed cost a syscall.
            handler = _signal.getsignal(sig)
            if handler is not None and handler != _signal.SIG_DFL:
                # try, not contextlib.suppress: its Python (an object, __enter__, __exit__)
                # would run for each changed signal, on pages not yet copied.
                try:  # noqa: SIM105
                    _signal.signal(sig, _signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        _signal.pthread_sigmask(_signal.SIG_SETMASK, ())

    def close_fds_except(self, keep: set[int]) -> None:
        # close_range(2) under the hood: a gap at a time, not a million close() calls.
        low = 3
        for fd in sorted(f for f in keep if f >= 3):
            if fd > low:
                os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 1 << 20)

    def dup_above(self, fd: int, low: int) -> int:
        # Close-on-exec: a copy made only to get out of another fd's way must not reach the
        # service.
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)

    def dup_to(self, fd: int, target: int) -> None:
        if fd == target:
            # dup2(n, n) is a no-op that leaves FD_CLOEXEC set: the fd would vanish at execve.
            os.set_inheritable(fd, True)
            return
        os.dup2(fd, target, inheritable=True)

    def setup_stdio(self, stdout_fd: int, stderr_fd: int) -> None:
        out, err = os.dup(stdout_fd), os.dup(stderr_fd)
        null = os.open("/dev/null", os.O_RDONLY)
        for src, dst in ((null, 0), (out, 1), (err, 2)):
            os.dup2(src, dst)
            os.close(src)

    def execve(self, path: str, argv: list[str], env: dict[str, str]) -> NoReturn:
        os.execve(path, argv, env)


REAL: Syscalls = LibcSyscalls()


# renameat2(2) (glibc 2.28+; Python 3.11 has no binding). Used by linux/safefs.py only.
RENAME_EXCHANGE = 2
_libc.renameat2.argtypes = [
    ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint,
]  # fmt: skip


def rename_exchange(dir_fd: int, old: str, new: str) -> None:
    """Swap the names `old` and `new` in `dir_fd` at once (RENAME_EXCHANGE): both must exist;
    OSError(ENOENT) if one does not, EINVAL where the filesystem cannot exchange."""
    if int(_libc.renameat2(dir_fd, os.fsencode(old), dir_fd, os.fsencode(new),
                           RENAME_EXCHANGE)) < 0:  # fmt: skip
        raise _oserror(new)
