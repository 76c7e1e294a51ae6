"""The v2 device filter program, run by a tiny eBPF interpreter (only the opcodes we emit).

The interpreter is strict where the kernel verifier is (forward jumps inside the program, reads
from the context only, r0 set before exit), so a program it accepts has the shape the verifier
loads; the real verifier runs in tests/integration/test_devices.py on the v2 VM.
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from supervisor.cgroups import devices_bpf as bpf
from supervisor.cgroups.devices import DEFAULT_RULES, DeviceRule

CTX = object()  # r1 at entry: the pointer to struct bpf_cgroup_dev_ctx
MASK64 = (1 << 64) - 1
BLOCK, CHAR = 1, 2
MKNOD, READ, WRITE = 1, 2, 4


def run(program: bytes, kind: int, access: int, major: int, minor: int) -> int:
    ctx = struct.pack("<III", (access << 16) | kind, major, minor)
    insns = [struct.unpack_from("<BBhi", program, i) for i in range(0, len(program), 8)]
    regs: list[object] = [None] * 11
    regs[1] = CTX
    pc = 0
    while True:
        assert 0 <= pc < len(insns), f"pc {pc} outside the program"
        op, reg, off, imm = insns[pc]
        dst, src = reg & 0xF, reg >> 4
        pc += 1
        if op == bpf.LDXW:
            assert regs[src] is CTX and off in (0, 4, 8), "load only from the context"
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif op == bpf.MOV64_IMM:
            regs[dst] = imm & MASK64
        elif op == bpf.MOV64_REG:
            regs[dst] = regs[src]
        elif op in (bpf.AND64_IMM, bpf.RSH64_IMM):
            value = regs[dst]
            assert isinstance(value, int), "arithmetic on an uninitialised register"
            regs[dst] = value & (imm & MASK64) if op == bpf.AND64_IMM else value >> imm
        elif op in (bpf.JNE_IMM, bpf.JNE_REG):
            assert off >= 0, "backward jump (the verifier refuses loops)"
            other = imm & MASK64 if op == bpf.JNE_IMM else regs[src]
            if regs[dst] != other:
                pc += off
        elif op == bpf.EXIT:
            assert isinstance(regs[0], int), "r0 unset at exit"
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")


def reference(rules: list[DeviceRule], kind: int, access: int, major: int, minor: int) -> int:
    """What the rules mean, written the obvious way."""
    for r in rules:
        allowed = sum(bpf.ACCESS_BITS[c] for c in r.access)
        if (
            bpf.DEV_TYPE[r.kind] == kind
            and access & allowed == access
            and r.major in (None, major)
            and r.minor in (None, minor)
        ):
            return 1
    return 0


def test_instruction_encoding_matches_the_kernel_abi() -> None:
    # r2 = *(u32 *)(r1 + 0): dst in the low nibble, src in the high one (as llvm-objdump shows)
    assert bpf.insn(bpf.LDXW, 2, 1, 0) == bytes.fromhex("6112000000000000")
    assert bpf.insn(bpf.MOV64_IMM, 0, imm=1) == bytes.fromhex("b700000001000000")
    assert bpf.insn(bpf.JNE_IMM, 4, off=3, imm=254) == bytes.fromhex("55040300fe000000")
    assert bpf.insn(bpf.EXIT) == bytes.fromhex("9500000000000000")


def test_default_program_allows_the_minimal_dev_only() -> None:
    prog = bpf.assemble(DEFAULT_RULES)
    assert run(prog, CHAR, READ | WRITE, 1, 3) == 1  # /dev/null
    assert run(prog, CHAR, READ, 1, 9) == 1  # /dev/urandom
    assert run(prog, CHAR, READ | WRITE, 136, 7) == 1  # /dev/pts/7
    assert run(prog, CHAR, READ | WRITE, 5, 2) == 1  # /dev/ptmx
    assert run(prog, CHAR, MKNOD, 1, 3) == 0, "no mknod, even of /dev/null"
    assert run(prog, CHAR, READ, 1, 1) == 0, "/dev/mem: the host's physical memory"
    assert run(prog, BLOCK, READ, 254, 0) == 0, "/dev/vda: the host's disk"
    assert run(prog, BLOCK, READ, 1, 3) == 0, "a block device with null's numbers"
    assert run(prog, CHAR, READ | WRITE, 10, 200) == 0, "/dev/net/tun not by default"
    assert run(prog, CHAR, READ, 137, 0) == 0


def test_partial_access_rule_requires_every_requested_bit() -> None:
    prog = bpf.assemble([DeviceRule("c", 10, 200, "r")])
    assert run(prog, CHAR, READ, 10, 200) == 1
    assert run(prog, CHAR, READ | WRITE, 10, 200) == 0
    assert run(prog, CHAR, WRITE, 10, 200) == 0


def test_empty_list_denies_everything() -> None:
    assert run(bpf.assemble([]), CHAR, READ, 1, 3) == 0


rule_strategy = st.builds(
    DeviceRule,
    st.sampled_from(["c", "b"]),
    st.one_of(st.none(), st.integers(0, 300)),
    st.one_of(st.none(), st.integers(0, 300)),
    st.sampled_from(["r", "w", "m", "rw", "rm", "wm", "rwm"]),
)


@given(
    rules=st.lists(rule_strategy, max_size=6),
    kind=st.sampled_from([BLOCK, CHAR]),
    access=st.integers(1, 7),
    major=st.integers(0, 300),
    minor=st.integers(0, 300),
)
def test_program_agrees_with_the_rules(
    rules: list[DeviceRule], kind: int, access: int, major: int, minor: int
) -> None:
    assert run(bpf.assemble(rules), kind, access, major, minor) == reference(
        rules, kind, access, major, minor
    )
