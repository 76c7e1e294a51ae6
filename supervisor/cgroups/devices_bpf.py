"""cgroup v2 device filter: the allowlist as an eBPF program, attached to the unit's cgroup.

v2 has no devices.allow file: the kernel asks the BPF_PROG_TYPE_CGROUP_DEVICE programs of the
cgroup and its ancestors on every open(2)/mknod(2) of a device node, and refuses (EPERM) unless
every program returns 1. The program is assembled here from the rules (no compiler, no libbpf;
runc's `devicefilter` emits the same shape):

    r2 = ctx->access_type & 0xffff   (BPF_DEVCG_DEV_BLOCK 1 / CHAR 2)
    r3 = ctx->access_type >> 16      (BPF_DEVCG_ACC_MKNOD 1 | READ 2 | WRITE 4)
    r4 = ctx->major, r5 = ctx->minor
    per rule: type, access (requested bits within the rule's), major, minor match -> return 1
    return 0

Attached with BPF_F_ALLOW_MULTI so a program on an ancestor (systemd's DevicePolicy) still
applies; a new list replaces the old program (BPF_F_REPLACE) without a moment with no filter:
fail closed. The cgroup holds the program, so no fd is kept: a re-adopted cgroup (daemon
restart) is updated by querying what is attached.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterable

from supervisor.cgroups.devices import DeviceRule
from supervisor.errors import CgroupError
from supervisor.linux.bpf import (
    BPF_CGROUP_DEVICE,
    BPF_F_ALLOW_MULTI,
    BPF_F_REPLACE,
    BPF_PROG_TYPE_CGROUP_DEVICE,
    Bpf,
    BpfError,
)

PROGRAM_NAME = "sandboxd_dev"
# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
CTX_ACCESS, CTX_MAJOR, CTX_MINOR = 0, 4, 8
DEV_TYPE = {"b": 1, "c": 2}
ACCESS_BITS = {"m": 1, "r": 2, "w": 4}

# Opcodes used (class | op | source), from include/uapi/linux/bpf{,_common}.h.
LDXW = 0x61  # BPF_LDX | BPF_MEM | BPF_W:  dst = *(u32 *)(src + off)
MOV64_IMM = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
MOV64_REG = 0xBF  # BPF_ALU64 | BPF_MOV | BPF_X
AND64_IMM = 0x57  # BPF_ALU64 | BPF_AND | BPF_K
RSH64_IMM = 0x77  # BPF_ALU64 | BPF_RSH | BPF_K
JNE_IMM = 0x55  # BPF_JMP | BPF_JNE | BPF_K:  if dst != imm: pc += off
JNE_REG = 0x5D  # BPF_JMP | BPF_JNE | BPF_X:  if dst != src: pc += off
EXIT = 0x95  # BPF_JMP | BPF_EXIT
R0, R1, R2, R3, R4, R5 = range(6)


def insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One struct bpf_insn: u8 code, u8 dst:4 src:4 (dst in the low nibble), s16 off, s32 imm."""
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


def _rule_block(rule: DeviceRule) -> list[tuple[int, int, int, int | None, int]]:
    """(op, dst, src, off, imm) with off=None for "jump to the next rule"."""
    body: list[tuple[int, int, int, int | None, int]] = [
        (JNE_IMM, R2, 0, None, DEV_TYPE[rule.kind])
    ]
    allowed = sum(ACCESS_BITS[c] for c in rule.access)
    if allowed != 7:
        # Every requested bit must be allowed: (requested & allowed) == requested.
        body += [(MOV64_REG, R1, R3, 0, 0), (AND64_IMM, R1, 0, 0, allowed),
                 (JNE_REG, R1, R3, None, 0)]  # fmt: skip
    if rule.major is not None:
        body.append((JNE_IMM, R4, 0, None, rule.major))
    if rule.minor is not None:
        body.append((JNE_IMM, R5, 0, None, rule.minor))
    body += [(MOV64_IMM, R0, 0, 0, 1), (EXIT, 0, 0, 0, 0)]
    return body


def assemble(rules: Iterable[DeviceRule]) -> bytes:
    """The device filter for `rules` (allow on the first match, else deny), as bytes."""
    out = [
        insn(LDXW, R2, R1, CTX_ACCESS),
        insn(MOV64_REG, R3, R2),
        insn(AND64_IMM, R2, imm=0xFFFF),
        insn(RSH64_IMM, R3, imm=16),
        insn(LDXW, R4, R1, CTX_MAJOR),
        insn(LDXW, R5, R1, CTX_MINOR),
    ]
    for rule in rules:
        block = _rule_block(rule)
        for index, (op, dst, src, off, imm) in enumerate(block):
            # Offsets count from the next instruction; "next rule" is just past this block.
            out.append(insn(op, dst, src, len(block) - index - 1 if off is None else off, imm))
    out += [insn(MOV64_IMM, R0, imm=0), insn(EXIT)]
    return b"".join(out)


def _open_dir(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise CgroupError(f"cannot open cgroup {path}: {os.strerror(err.errno or 0)}") from err


def install(bpf: Bpf, cgroup: str, rules: Iterable[DeviceRule]) -> None:
    """Attach the filter for `rules` to the cgroup directory, replacing any earlier one.

    A failure anywhere is a CgroupError: the unit must not start without its device filter.
    """
    program = assemble(rules)
    cg = _open_dir(cgroup)
    prog = -1
    try:
        prog = bpf.prog_load(BPF_PROG_TYPE_CGROUP_DEVICE, program, "GPL", PROGRAM_NAME)
        old = bpf.prog_query(cg, BPF_CGROUP_DEVICE)
        if len(old) == 1:
            old_fd = bpf.prog_fd_by_id(old[0])
            try:
                flags = BPF_F_ALLOW_MULTI | BPF_F_REPLACE
                bpf.prog_attach(cg, prog, BPF_CGROUP_DEVICE, flags, old_fd)
            finally:
                os.close(old_fd)
        else:
            # Attach first, then detach the old ones: for a moment both filters apply (a
            # device must pass every program), never neither.
            bpf.prog_attach(cg, prog, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
            _detach(bpf, cg, old)
    except BpfError as err:
        raise CgroupError(f"cannot set the device filter of cgroup {cgroup}: {err}") from err
    finally:
        if prog >= 0:
            os.close(prog)  # the cgroup keeps its own reference
        os.close(cg)


def remove(bpf: Bpf, cgroup: str) -> None:
    """Detach every device filter attached to the cgroup itself (before its rmdir)."""
    with contextlib.suppress(FileNotFoundError):
        cg = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _detach(bpf, cg, bpf.prog_query(cg, BPF_CGROUP_DEVICE))
        except BpfError as err:
            raise CgroupError(f"cannot detach the device filter of {cgroup}: {err}") from err
        finally:
            os.close(cg)


def _detach(bpf: Bpf, cg: int, ids: list[int]) -> None:
    for prog_id in ids:
        try:
            fd = bpf.prog_fd_by_id(prog_id)
        except BpfError as err:
            if err.errno == 2:  # ENOENT: released meanwhile
                continue
            raise
        try:
            bpf.prog_detach(cg, fd, BPF_CGROUP_DEVICE)
        finally:
            os.close(fd)
