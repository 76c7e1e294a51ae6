"""A recording stand-in for bpf(2) (`supervisor.linux.bpf.Bpf`), for backends on a fake cgroupfs.

Program and cgroup fds are real fds (of /dev/null and the fake cgroup directory), because the
code under test closes them; the fake maps them to program ids and directory paths.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field


@dataclass
class RecordingBpf:
    programs: dict[int, bytes] = field(default_factory=dict)  # id -> instructions
    attached: dict[str, list[int]] = field(default_factory=dict)  # cgroup dir -> ids
    calls: list[tuple[str, ...]] = field(default_factory=list)
    _fds: dict[int, int] = field(default_factory=dict)  # open program fd -> id
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _new_fd(self, prog_id: int) -> int:
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._fds[fd] = prog_id
        return fd

    def _id(self, fd: int) -> int:
        # A closed and reused fd number would map to a stale id: stat it to be sure it is ours.
        assert os.path.samestat(os.fstat(fd), os.stat(os.devnull)), f"fd {fd} is not a program"
        return self._fds[fd]

    @staticmethod
    def _dir(fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}")

    def prog_load(self, prog_type: int, insns: bytes, license: str, name: str) -> int:
        prog_id = next(self._ids)
        self.programs[prog_id] = insns
        self.calls.append(("load", str(prog_id), license, name))
        return self._new_fd(prog_id)

    def prog_attach(
        self, cgroup_fd: int, prog_fd: int, attach_type: int, flags: int, replace_fd: int = 0
    ) -> None:
        path, prog_id = self._dir(cgroup_fd), self._id(prog_fd)
        progs = self.attached.setdefault(path, [])
        if replace_fd:
            progs.remove(self._id(replace_fd))
        progs.append(prog_id)
        self.calls.append(("attach", path, str(prog_id), str(flags)))

    def prog_detach(self, cgroup_fd: int, prog_fd: int, attach_type: int) -> None:
        path, prog_id = self._dir(cgroup_fd), self._id(prog_fd)
        self.attached[path].remove(prog_id)
        self.calls.append(("detach", path, str(prog_id)))

    def prog_query(self, cgroup_fd: int, attach_type: int) -> list[int]:
        return list(self.attached.get(self._dir(cgroup_fd), []))

    def prog_fd_by_id(self, prog_id: int) -> int:
        return self._new_fd(prog_id)

    def program_of(self, path: str) -> bytes:
        """The instructions of the one program attached to `path`."""
        (prog_id,) = self.attached[path]
        return self.programs[prog_id]
