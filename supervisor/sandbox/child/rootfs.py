"""The sandbox's root, applied by PID 1: the mount plan (host/rootplan.py) through `Syscalls`.

Fail closed: every operation either succeeds or aborts the launch with a StageFailure naming
it. Every host path is opened without following a symlink and mounted through its fd, and
every target inside an untrusted tree must resolve to itself (see host/rootplan.py for the
threats).
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

from supervisor.linux.syscalls import MNT_DETACH, MS_BIND, MS_RDONLY, Syscalls
from supervisor.sandbox.wire.mounts import (
    NOSUID_NODEV_NOEXEC,
    Bind,
    Mask,
    Mkdir,
    Mount,
    Op,
    PivotRoot,
    ReadOnly,
    RemountRoot,
    Symlink,
    WriteFile,
    WriteInRoot,
)
from supervisor.sandbox.wire.protocol import StageFailure


def _through_symlink(path: str) -> StageFailure:
    return StageFailure(
        "rootfs", 40, f"mount target {path} resolves through a symlink; refusing to follow it"
    )


def _check_target(sys: Syscalls, path: str) -> None:
    if sys.resolve(path) != path:
        raise _through_symlink(path)


def _mkdir_checked(sys: Syscalls, path: str, mode: int) -> None:
    try:
        sys.mkdir_nofollow(path, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _through_symlink(path) from None
        raise


# Why a WriteInRoot is left undone rather than failing the launch: the tree has no such place
# of its own. ENOENT: the file's directory is missing in the tree (resolv.conf a link to
# /opt/x/resolv.conf in an image without /opt/x); EXDEV: the path leads onto a mount (the
# sandbox's /run tmpfs, where systemd's stub-resolv.conf link points, /proc, a unit's bind of
# its own resolv.conf), which is not the tree's to write; ELOOP: a link loop;
# ENOTDIR/EISDIR/EINVAL: a file or directory where a directory or a regular file should be
# (a FIFO or a device node is never opened for writing); ENOSYS: a kernel before 5.6 (no
# openat2), where the write could not be confined. The image then keeps its own file.
_LEFT_ALONE = frozenset(
    {errno.ENOENT, errno.EXDEV, errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EINVAL,
     errno.ENOSYS}
)  # fmt: skip


def fd_path(fd: int) -> str:
    # mount(2) follows this magic link straight to the file the fd holds (runc's technique):
    # the path it was opened by is never looked up again, so swapping it afterwards is useless.
    return f"/proc/self/fd/{fd}"


def _open_source(sys: Syscalls, what: str, path: str, directory: bool = False) -> int:
    try:
        return sys.open_path(path, directory)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise symlink_in_path(what, path) from None
        raise StageFailure.from_oserror("rootfs", f"open {what} {path}", err) from None


def symlink_in_path(what: str, path: str) -> StageFailure:
    """A source opened without following symlinks met one (ELOOP): the words PID 1 and the
    launcher's holds (holding.py) both say."""
    return StageFailure(
        "rootfs",
        errno.ELOOP,
        f"{what} {path} has a symlink in its path; sandboxd never follows one there "
        "(name the real path)",
    )


def _mount_layers(sys: Syscalls, op: Mount) -> None:
    fds: list[int] = []
    try:
        for option, path in op.layers:
            fds.append(_open_source(sys, f"{op.fstype} {option}", path, directory=True))
        # One option per name: overlayfs takes several lower layers as lowerdir=a:b (top
        # first), and a repeated lowerdir= would replace the earlier one.
        joined: dict[str, list[str]] = {}
        for (name, _), fd in zip(op.layers, fds, strict=True):
            joined.setdefault(name, []).append(fd_path(fd))
        options = [f"{name}={':'.join(paths)}" for name, paths in joined.items()]
        data = ",".join(options + ([op.data] if op.data else []))
        sys.mount(op.source, op.target, op.fstype, op.flags, data)
    finally:
        for fd in fds:
            sys.close(fd)


def _bind_fd(sys: Syscalls, source: str, target: str) -> None:
    fd = _open_source(sys, "bind source", source)
    try:
        sys.mount(fd_path(fd), target, None, MS_BIND, None)
    finally:
        sys.close(fd)


def _bind(sys: Syscalls, op: Bind) -> None:
    if op.check:
        _check_target(sys, op.target)
    if op.is_dir:
        sys.mkdir(op.target, 0o755)
    else:
        sys.touch(op.target)  # leaves what exists there alone
    if op.check:
        _check_target(sys, op.target)
    if op.own:
        sys.mount(op.source, op.target, None, MS_BIND, None)
    else:
        _bind_fd(sys, op.source, op.target)
    if op.remount is not None:
        sys.mount(None, op.target, None, op.remount, None)


# A root's masks bind few sources many times (/dev/null on every masked file, the first masked
# directory's tmpfs on the others): each is opened once per root, by `apply`, and its fd
# mounted for every mask of it, where an open and a close per mask were two syscalls and a
# ctypes openat2 of Python each. Neither is the untrusted tree's: the host's /dev/null, and
# the tmpfs PID 1 mounted itself.
MaskSources = dict[str, int]


def _mask(sys: Syscalls, op: Mask, sources: MaskSources | None) -> None:
    """`op` done, its source taken from `sources` (or opened and kept there); without
    `sources`, opened and closed for this mask alone."""
    if sources is None:
        sources = {}
        try:
            _mask(sys, op, sources)
        finally:
            _close_sources(sys, sources)
        return
    if op.is_dir and not op.like:
        sys.mount("tmpfs", op.path, "tmpfs", MS_RDONLY | NOSUID_NODEV_NOEXEC, "size=0")
        return
    # A directory: the first masked one's tmpfs, bound (by fd, as every bind): a bind keeps
    # its source mount's flags, so it is as read-only, nosuid, nodev and noexec as that one.
    source = op.like if op.is_dir else "/dev/null"
    fd = sources.get(source)
    if fd is None:
        fd = sources[source] = _open_source(sys, "bind source", source)
    sys.mount(fd_path(fd), op.path, None, MS_BIND, None)


def apply_op(  # noqa: PLR0912  (one case per Op type)
    sys: Syscalls, op: Op, sources: MaskSources | None = None
) -> None:
    """`op` done; `sources`: the mask sources opened so far (see MaskSources), kept open by
    the caller, who closes them (without it, a mask's source is closed at once)."""
    match op:
        case Mkdir(path, mode, False, True):
            # One directory in an untrusted tree (a mount point of the kernel filesystems):
            # made in its parent opened without following links, itself no link either. Its
            # parent is the staging root, ours: only the last component is the tree's, so an
            # lstat saying "a directory" settles the usual case (the tree has it) in one
            # syscall, where the checked mkdir is four. It is no weaker: the mount that
            # follows goes by the path either way.
            if sys.kind(path) != "dir":
                _mkdir_checked(sys, path, mode)
        case Mkdir(path, mode, parents, check):
            # Checked before too: a link in the part that exists (DIR/srv -> /etc) would make
            # the mkdir itself create a host directory.
            if check:
                _check_target(sys, path)
            sys.mkdir(path, mode, parents)
            if check:
                _check_target(sys, path)
        case Mount(source, target, fstype, flags, data, layers):
            if layers:
                _mount_layers(sys, op)
            else:
                sys.mount(source, target, fstype, flags, data)
        case Bind():
            _bind(sys, op)
        case Symlink(target, path):
            sys.symlink(target, path)
        case WriteFile(path, data):
            sys.write_file(path, data)
        case WriteInRoot(root, path, data, mode):
            try:
                sys.write_in_root(root, path, data, mode)
            except OSError as err:
                if err.errno not in _LEFT_ALONE:
                    raise
        case Mask():
            _mask(sys, op, sources)
        case ReadOnly(path, remount):
            sys.mount(path, path, None, MS_BIND, None)
            sys.mount(None, path, None, remount, None)
        case RemountRoot(path, flags):
            sys.mount(None, path, None, flags, None)
        case PivotRoot(new_root):
            # pivot_root(".", ".") stacks the old root on top of the new one; unmounting "."
            # then detaches the whole host tree from this namespace (no chroot escape left).
            sys.chdir(new_root)
            sys.pivot_root(".", ".")
            sys.umount2(".", MNT_DETACH)
            sys.chdir("/")


def describe(op: Op) -> str:
    match op:
        case Bind(source, target, _, remount, _, _):
            ro = " read-only" if remount is not None and remount & MS_RDONLY else ""
            return f"bind {source} on {target}{ro}"
        case Mount(source, target, fstype, _, _, layers):
            over = "".join(f" {option}={path}" for option, path in layers)
            return f"mount {fstype or source}{over} on {target}"
        case Mask(path, _, like) if like:
            return f"mask {path} (bind {like})"
        case WriteInRoot(root, path, _, _):
            return f"write {path} in the root at {root}"
        case _:
            return f"{type(op).__name__.lower()} {next(iter(vars(op).values()))}"


def _close_sources(sys: Syscalls, sources: MaskSources) -> None:
    for fd in sources.values():
        sys.close(fd)


def apply(sys: Syscalls, ops: Iterable[Op]) -> None:
    sources: MaskSources = {}
    try:
        for op in ops:
            try:
                apply_op(sys, op, sources)
            except OSError as err:
                raise StageFailure.from_oserror("rootfs", describe(op), err) from None
    finally:
        _close_sources(sys, sources)
