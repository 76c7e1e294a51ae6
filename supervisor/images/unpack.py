"""Unpacking one layer tar into a directory, safely, in overlayfs form.

Threats (a layer is whatever the image's author put in it):
- path escapes: an absolute name, a `..` component, or a name that goes through a symlink the
  tar made earlier (`link -> /etc`, then `link/passwd`) would write outside the layer. Every
  name is checked lexically, and every parent directory is opened with O_NOFOLLOW from the
  layer's root, one component at a time: a symlink anywhere on the way is refused, never
  followed. A hardlink's target is resolved the same way, so it stays inside the layer;
- device nodes: a block or character device would hand the sandbox the host's disk (the device
  cgroup denies them anyway; we do not create them at all). FIFOs are harmless and kept;
- size: the entry count, each file and the whole layer are bounded, so a layer cannot fill the
  host's disk with a bomb;
- a half-written layer: the caller unpacks into a temporary directory and renames it into
  place only when everything (the digests included) checked out.

Whiteouts (image-spec `layer.md`) become what overlayfs reads: `.wh.NAME` a 0:0 character
device named NAME (root may mknod that one; it is no device), and `.wh..wh..opq` the xattr
`trusted.overlay.opaque=y` on its directory.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"


@dataclass(frozen=True)
class Limits:
    max_entries: int = 1_000_000
    max_file: int = 16 << 30
    max_total: int = 64 << 30


class UnsafeLayer(Exception):
    """The layer holds an entry we refuse; the message names it."""


def _parts(name: str) -> list[str]:
    """The components of a member name, or UnsafeLayer for an escaping one."""
    if "\0" in name:
        raise UnsafeLayer(f"{name!r}: NUL byte in the name")
    if name.startswith("/"):
        raise UnsafeLayer(f"{name!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer(f"{name!r}: '..' in the path")
    return parts


class _Tree:
    """The layer's directory, reached only through O_NOFOLLOW opens from its root fd."""

    def __init__(self, root: str) -> None:
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.root_fd)

    @contextlib.contextmanager
    def parent(self, parts: list[str], name: str) -> Iterator[int]:
        """An fd for the directory holding `parts[-1]`, creating missing directories (0755,
        as tar itself does when a layer omits them)."""
        fd = os.dup(self.root_fd)
        try:
            for part in parts[:-1]:
                try:
                    nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                  | os.O_CLOEXEC, dir_fd=fd)  # fmt: skip
                except FileNotFoundError:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    os.chmod(part, 0o755, dir_fd=fd)  # whatever the helper's umask
                    nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                  | os.O_CLOEXEC, dir_fd=fd)  # fmt: skip
                except OSError as exc:  # ELOOP / ENOTDIR: a symlink or a file on the way
                    raise UnsafeLayer(
                        f"{name!r}: {part!r} on its path is not a directory of the layer "
                        f"(a symlink is never followed): {exc.strerror}"
                    ) from None
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)


def _remove(dir_fd: int, name: str) -> None:
    """Whatever `name` is in `dir_fd` (a later entry replaces an earlier one)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=dir_fd)  # fmt: skip
        try:
            for child in os.listdir(fd):
                _remove(fd, child)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _metadata(dir_fd: int, name: str, member: tarfile.TarInfo, symlink: bool = False) -> None:
    os.chown(name, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)
    if not symlink:
        # chown cleared setuid bits; the mode (setuid included, as the image says) comes after.
        os.chmod(name, member.mode & 0o7777, dir_fd=dir_fd)
    os.utime(name, (member.mtime, member.mtime), dir_fd=dir_fd, follow_symlinks=False)


def _copy(src: IO[bytes], fd: int, size: int) -> None:
    left = size
    while left:
        chunk = src.read(min(left, 1 << 20))
        if not chunk:
            raise UnsafeLayer("the tar ends inside a file")
        os.write(fd, chunk)
        left -= len(chunk)


DEFAULT_LIMITS = Limits()


def unpack(stream: IO[bytes], dest: str, limits: Limits = DEFAULT_LIMITS) -> int:
    """Unpack the tar read from `stream` into the existing empty directory `dest`; returns the
    bytes of file content written. UnsafeLayer (or tarfile.TarError) on a refused layer."""
    unpacker = _Unpacker(_Tree(dest), limits)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                unpacker.add(tar, member)
        unpacker.finish()
    finally:
        unpacker.tree.close()
    return unpacker.total


class _Unpacker:
    def __init__(self, tree: _Tree, limits: Limits) -> None:
        self.tree, self.limits = tree, limits
        self.entries = self.total = 0
        self.dir_times: list[tuple[list[str], tarfile.TarInfo]] = []

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise UnsafeLayer(f"more than {self.limits.max_entries} entries")
        parts = _parts(member.name)
        if not parts:  # "./": the layer's root directory itself
            return
        base = parts[-1]
        with self.tree.parent(parts, member.name) as dir_fd:
            if base == OPAQUE:
                # Opaque: the directory hides everything below it in lower layers.
                os.setxattr(dir_fd, OPAQUE_XATTR, b"y")
            elif base.startswith(WHITEOUT):
                hidden = base.removeprefix(WHITEOUT)
                _remove(dir_fd, hidden)
                os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dir_fd)
            elif member.isdir():
                self._directory(dir_fd, base, member)
                self.dir_times.append((parts, member))
            else:
                _remove(dir_fd, base)
                self._other(tar, dir_fd, base, member)

    def _directory(self, dir_fd: int, base: str, member: tarfile.TarInfo) -> None:
        try:
            st = os.stat(base, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            _remove(dir_fd, base)
            st = None
        if st is None:
            os.mkdir(base, 0o700, dir_fd=dir_fd)
        _metadata(dir_fd, base, member)

    def _other(self, tar: tarfile.TarFile, dir_fd: int, base: str, member: tarfile.TarInfo) -> None:
        if member.isreg():
            self._file(tar, dir_fd, base, member)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=dir_fd)
            _metadata(dir_fd, base, member, symlink=True)
        elif member.islnk():
            _hardlink(self.tree, dir_fd, base, member)
        elif member.isfifo():
            os.mkfifo(base, 0o600, dir_fd=dir_fd)
            _metadata(dir_fd, base, member)
        else:
            kind = "device node" if member.isdev() else "entry of an unknown type"
            raise UnsafeLayer(f"{member.name!r}: a {kind} is refused")

    def _file(self, tar: tarfile.TarFile, dir_fd: int, base: str, member: tarfile.TarInfo) -> None:
        if member.size > self.limits.max_file:
            raise UnsafeLayer(f"{member.name!r}: {member.size} bytes is too large")
        self.total += member.size
        if self.total > self.limits.max_total:
            raise UnsafeLayer(f"more than {self.limits.max_total} bytes of content")
        src = tar.extractfile(member)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(base, flags, 0o600, dir_fd=dir_fd)
        try:
            if src is not None:
                _copy(src, fd, member.size)
        finally:
            os.close(fd)
        _metadata(dir_fd, base, member)

    def finish(self) -> None:
        """Directory times last: creating their content moved them."""
        for parts, member in reversed(self.dir_times):
            with self.tree.parent(parts, member.name) as dir_fd:
                mtime = (member.mtime, member.mtime)
                os.utime(parts[-1], mtime, dir_fd=dir_fd, follow_symlinks=False)


def _hardlink(tree: _Tree, dir_fd: int, base: str, member: tarfile.TarInfo) -> None:
    """A hardlink to a regular file this layer already holds, found without symlinks."""
    target = _parts(member.linkname)
    if not target:
        raise UnsafeLayer(f"{member.name!r}: a hardlink to the layer's root")
    with tree.parent(target, member.name) as target_dir:
        try:
            st = os.stat(target[-1], dir_fd=target_dir, follow_symlinks=False)
        except FileNotFoundError:
            raise UnsafeLayer(
                f"{member.name!r}: hardlink to {member.linkname!r}, which is not in the layer"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeLayer(f"{member.name!r}: hardlink to {member.linkname!r}, not a file")
        os.link(target[-1], base, src_dir_fd=target_dir, dst_dir_fd=dir_fd,
                follow_symlinks=False)  # fmt: skip
