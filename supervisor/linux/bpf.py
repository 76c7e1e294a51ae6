"""bpf(2) through ctypes: load a program, attach/detach/query it on a cgroup. Nothing else.

Python has no binding for bpf(2), and libbpf would be a C dependency for five commands, so
`union bpf_attr` is packed by hand here (layouts from include/uapi/linux/bpf.h, stable ABI;
the kernel zero-checks any tail it does not know, so a zeroed 128-byte buffer is accepted by
every kernel since 4.15). Kept apart from `syscalls.py` because only the cgroup layer uses it,
never the launcher's forked child; `Bpf` is the Protocol the cgroup code takes, so unit tests
pass a recording fake instead of loading programs into the kernel.

Every failure raises `BpfError` (an OSError) naming the command; a rejected program carries
the verifier's log, which is the only useful diagnosis for a bad instruction.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from typing import Protocol

# Commands (enum bpf_cmd).
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16
# enum bpf_prog_type / enum bpf_attach_type.
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
# Attach flags: MULTI lets several programs share a cgroup (and systemd's on an ancestor keep
# working); REPLACE swaps one of them atomically (Linux >= 5.6).
BPF_F_ALLOW_MULTI = 1 << 1
BPF_F_REPLACE = 1 << 2

_ATTR_SIZE = 128
_LOG_SIZE = 1 << 16
_MAX_QUERY = 64
_SYSCALL_NR = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361, "s390x": 351}


class BpfError(OSError):
    """A bpf(2) command failed; `log` is the verifier's output for a rejected program."""

    def __init__(self, errno: int, what: str, log: str = "") -> None:
        message = f"bpf {what}: {os.strerror(errno)}"
        if log:
            message += f"\nverifier log:\n{log.strip()}"
        super().__init__(errno, message)
        self.log = log

    def __str__(self) -> str:
        return str(self.strerror)


class Bpf(Protocol):
    """The bpf(2) commands the cgroup device filter needs; fds returned are O_CLOEXEC."""

    def prog_load(self, prog_type: int, insns: bytes, license: str, name: str) -> int: ...

    def prog_attach(
        self, cgroup_fd: int, prog_fd: int, attach_type: int, flags: int, replace_fd: int = 0
    ) -> None: ...

    def prog_detach(self, cgroup_fd: int, prog_fd: int, attach_type: int) -> None: ...

    def prog_query(self, cgroup_fd: int, attach_type: int) -> list[int]:
        """Ids of the programs attached to this cgroup itself (not inherited ones)."""
        ...

    def prog_fd_by_id(self, prog_id: int) -> int: ...


class LibcBpf:
    """The real bpf(2), via libc's syscall()."""

    def __init__(self) -> None:
        machine = platform.machine()
        if machine not in _SYSCALL_NR:
            raise BpfError(38, f"on {machine}: syscall number unknown")
        self._nr = _SYSCALL_NR[machine]
        self._syscall = ctypes.CDLL(None, use_errno=True).syscall
        self._syscall.restype = ctypes.c_long

    def _call(self, cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
        res = int(self._syscall(self._nr, cmd, attr, ctypes.c_uint(_ATTR_SIZE)))
        if res < 0:
            raise BpfError(ctypes.get_errno(), what)
        return res

    def prog_load(self, prog_type: int, insns: bytes, license: str, name: str) -> int:
        code = ctypes.create_string_buffer(insns, len(insns))
        lic = ctypes.create_string_buffer(license.encode())
        try:
            return self._load(prog_type, code, lic, name, None)
        except BpfError as err:
            # Load again with the log on, only to explain the failure (as libbpf does): the
            # first attempt stays cheap and a log too small for a good program cannot fail it.
            log = ctypes.create_string_buffer(_LOG_SIZE)
            try:
                fd = self._load(prog_type, code, lic, name, log)
            except BpfError as again:
                raise BpfError(again.errno or err.errno or 22, "program load",
                               log.value.decode(errors="replace")) from err  # fmt: skip
            os.close(fd)
            raise

    def _load(
        self,
        prog_type: int,
        code: ctypes.Array[ctypes.c_char],
        lic: ctypes.Array[ctypes.c_char],
        name: str,
        log: ctypes.Array[ctypes.c_char] | None,
    ) -> int:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into(
            "=IIQQIIQII16s",
            attr,
            0,
            prog_type,
            len(code) // 8,
            ctypes.addressof(code),
            ctypes.addressof(lic),
            1 if log is not None else 0,  # log_level
            len(log) if log is not None else 0,
            ctypes.addressof(log) if log is not None else 0,
            0,  # kern_version
            0,  # prog_flags
            name.encode()[:15],
        )
        return self._call(BPF_PROG_LOAD, attr, "program load")

    def prog_attach(
        self, cgroup_fd: int, prog_fd: int, attach_type: int, flags: int, replace_fd: int = 0
    ) -> None:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("=IIIII", attr, 0, cgroup_fd, prog_fd, attach_type, flags, replace_fd)
        self._call(BPF_PROG_ATTACH, attr, "program attach")

    def prog_detach(self, cgroup_fd: int, prog_fd: int, attach_type: int) -> None:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("=III", attr, 0, cgroup_fd, prog_fd, attach_type)
        self._call(BPF_PROG_DETACH, attr, "program detach")

    def prog_query(self, cgroup_fd: int, attach_type: int) -> list[int]:
        ids = (ctypes.c_uint32 * _MAX_QUERY)()
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into(
            "=IIIIQI", attr, 0, cgroup_fd, attach_type, 0, 0, ctypes.addressof(ids), _MAX_QUERY
        )
        self._call(BPF_PROG_QUERY, attr, "program query")
        (count,) = struct.unpack_from("=I", attr, 24)
        return list(ids[: min(count, _MAX_QUERY)])

    def prog_fd_by_id(self, prog_id: int) -> int:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("=I", attr, 0, prog_id)
        return self._call(BPF_PROG_GET_FD_BY_ID, attr, f"get program {prog_id}")
