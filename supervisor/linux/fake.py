"""A recording `Syscalls` fake for unit tests: asserts namespace order and mount plans, no root.

Modelled on youki's syscall/test.rs: every call is appended to `calls` as a tuple, reads are
answered from dictionaries, and any call can be made to fail with a chosen errno.
"""

from __future__ import annotations

import errno
import os
from typing import NoReturn

from supervisor.linux.syscalls import MS_RELATIME, FileKind, HolderRoot


class RecordingSyscalls:
    """A fake that records every call as a tuple, for unit tests without root.

    `kinds` answers `kind()` (default: every path is a directory, a path in `links` a link);
    `files` answers `read_file()`; `links` answers `resolve()` (default: no symlinks), and
    `open_path()` of a path under one of them fails with ELOOP, as openat2's
    RESOLVE_NO_SYMLINKS does; `fail` maps a call name to the errno it raises. `open_path()`
    hands out fd numbers from 100 up.

    `fd_table` (fd -> a name for the open file behind it), if given, is a model of the process's
    descriptors that `dup_above`, `dup_to` and `close_fds_except` keep up to date, with
    `cloexec` the close-on-exec ones: `inherited()` is then what an execve would hand over.
    Without it those calls are only recorded (`dup_above` hands out numbers from `low` up).
    """

    def __init__(
        self,
        kinds: dict[str, FileKind] | None = None,
        files: dict[str, bytes] | None = None,
        fail: dict[str, int] | None = None,
        fork_result: int = 4242,
        links: dict[str, str] | None = None,
        *,
        fd_table: dict[int, str] | None = None,
        cloexec: set[int] | None = None,
    ) -> None:
        self.links = links or {}
        self.fd_table = fd_table
        self.cloexec = set(cloexec or ())
        self._next_fd = 0
        self._next_path_fd = 100
        self.calls: list[tuple[object, ...]] = []
        self.kinds = kinds or {}
        self.files = files or {}
        self.fail = fail or {}
        self.fork_result = fork_result

    def _record(self, name: str, *args: object) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            raise OSError(
                self.fail[name], os.strerror(self.fail[name]), str(args[0]) if args else None
            )

    def _refuse_links(self, path: str) -> None:
        """ELOOP for a link in any component, as openat2's RESOLVE_NO_SYMLINKS."""
        prefix = ""
        for part in path.strip("/").split("/"):
            prefix += "/" + part
            if self.links.get(prefix, prefix) != prefix:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)

    def names(self) -> list[str]:
        return [str(c[0]) for c in self.calls]

    def unshare(self, flags: int) -> None:
        self._record("unshare", flags)

    def setns(self, fd: int, nstype: int) -> None:
        self._record("setns", fd, nstype)

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        self._record("mount", source, target, fstype, flags, data)

    def mount_flags(self, path: str) -> int:
        return MS_RELATIME

    def umount2(self, target: str, flags: int) -> None:
        self._record("umount2", target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._record("pivot_root", new_root, put_old)

    def chdir(self, path: str) -> None:
        self._record("chdir", path)

    def mkdir(self, path: str, mode: int, parents: bool = False) -> None:
        self._record("mkdir", path, mode)

    def mkdir_nofollow(self, path: str, mode: int) -> None:
        # As the real one: a link anywhere in the path, the last component included, is ELOOP,
        # and nothing is made.
        self._refuse_links(path)
        self._record("mkdir", path, mode)

    def touch(self, path: str) -> None:
        self._record("touch", path)

    def symlink(self, target: str, path: str) -> None:
        self._record("symlink", target, path)

    def write_file(
        self, path: str, data: bytes, create: bool = True, dir_fd: int | None = None
    ) -> None:
        if dir_fd is None:
            self._record("write_file", path, data)
        else:
            self._record("write_file", path, data, dir_fd)

    def write_in_root(self, root: str, path: str, data: bytes, mode: int) -> None:
        self._record("write_in_root", root, path, data, mode)

    def read_file(self, path: str) -> bytes:
        if path not in self.files:
            raise FileNotFoundError(2, "No such file or directory", path)
        return self.files[path]

    def kind(self, path: str, follow: bool = False) -> FileKind | None:
        if not follow and self.links.get(path, path) != path:
            return "link"  # as lstat: a symlink in `links` is one
        return self.kinds.get(path, "dir")

    def resolve(self, path: str) -> str:
        # As realpath: a link anywhere in the path (the existing part of it) redirects the rest.
        prefix = ""
        for part in path.strip("/").split("/"):
            prefix += "/" + part
            if prefix in self.links:
                return self.links[prefix] + path[len(prefix) :]
        return path

    def open_path(self, path: str, directory: bool = False) -> int:
        self._record("open_path", path)
        self._refuse_links(path)
        fd = self._next_path_fd
        self._next_path_fd += 1
        return fd

    def open_tree(self, fd: int) -> int:
        self._record("open_tree", fd)
        tree = self._next_path_fd
        self._next_path_fd += 1
        return tree

    def mount_setattr(self, fd: int, attr_set: int, userns_fd: int = -1) -> None:
        self._record("mount_setattr", fd, attr_set, userns_fd)

    def move_mount(self, fd: int, target: str) -> None:
        self._record("move_mount", fd, target)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._record("chown", path, uid, gid)

    def make_userns(self, id_map: str) -> int:
        self._record("make_userns", id_map)
        fd = self._next_path_fd
        self._next_path_fd += 1
        return fd

    def hold_userns(self, id_map: str, path: str, root: HolderRoot | None = None) -> int:
        self._record("hold_userns", id_map, path, *(() if root is None else (root,)))
        fd = self._next_path_fd
        self._next_path_fd += 1
        return fd

    def open_own_ns(self, kind: str) -> int:
        self._record("open_own_ns", kind)
        fd = self._next_path_fd
        self._next_path_fd += 1
        return fd

    def close(self, fd: int) -> None:
        self._record("close", fd)

    def fresh_proc_sys(self) -> int:
        self._record("fresh_proc_sys")
        fd = self._next_path_fd
        self._next_path_fd += 1
        return fd

    def sethostname(self, name: str) -> None:
        self._record("sethostname", name)

    def link_up(self, ifname: str) -> None:
        self._record("link_up", ifname)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> int:
        self._record("prctl", option, arg2, arg3)
        return 0

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        self._record("capset", effective, permitted, inheritable)

    def setgroups(self, gids: list[int]) -> None:
        self._record("setgroups", list(gids))

    def setresgid(self, gid: int) -> None:
        self._record("setresgid", gid)

    def setresuid(self, uid: int) -> None:
        self._record("setresuid", uid)

    def setrlimit(self, which: int, soft: int, hard: int) -> None:
        self._record("setrlimit", which, soft, hard)

    def seccomp_load(self, bpf: bytes) -> None:
        self._record("seccomp_load", len(bpf))

    def fork(self) -> int:
        self._record("fork")
        return self.fork_result

    def kill_child(self, pid: int) -> None:
        self._record("kill_child", pid)

    def setsid(self) -> None:
        self._record("setsid")

    def reset_signals(self) -> None:
        self._record("reset_signals")

    def close_fds_except(self, keep: set[int]) -> None:
        self._record("close_fds_except", sorted(keep))
        if self.fd_table is not None:
            for fd in [f for f in self.fd_table if f >= 3 and f not in keep]:
                del self.fd_table[fd]
                self.cloexec.discard(fd)

    def _check_open(self, fd: int) -> str:
        if self.fd_table is None:
            return ""
        if fd not in self.fd_table:
            raise OSError(9, os.strerror(9))
        return self.fd_table[fd]

    def dup_above(self, fd: int, low: int) -> int:
        self._record("dup_above", fd, low)
        name = self._check_open(fd)
        if self.fd_table is None:
            new = self._next_fd = max(low, self._next_fd + 1)
            return new
        new = low
        while new in self.fd_table:
            new += 1
        self.fd_table[new] = name
        self.cloexec.add(new)
        return new

    def dup_to(self, fd: int, target: int) -> None:
        self._record("dup_to", fd, target)
        name = self._check_open(fd)
        if self.fd_table is not None:
            self.fd_table[target] = name
            self.cloexec.discard(target)

    def inherited(self) -> dict[int, str]:
        """The fds an execve now would leave open (needs `fd_table`)."""
        assert self.fd_table is not None
        return {fd: name for fd, name in self.fd_table.items() if fd not in self.cloexec}

    def setup_stdio(self, stdout_fd: int, stderr_fd: int) -> None:
        self._record("setup_stdio", stdout_fd, stderr_fd)
        if self.fd_table is not None:
            out, err = self._check_open(stdout_fd), self._check_open(stderr_fd)
            self.fd_table.update({0: "/dev/null", 1: out, 2: err})
            self.cloexec -= {0, 1, 2}

    def execve(self, path: str, argv: list[str], env: dict[str, str]) -> NoReturn:
        self._record("execve", path, list(argv), dict(env))
        raise SystemExit(0)
