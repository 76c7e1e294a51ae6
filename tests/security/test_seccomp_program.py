"""The compiled default profile, run instruction by instruction (no root, no kernel needed).

A small classic-BPF interpreter executes the exact bytes the daemon loads for a given syscall
number, architecture and arguments, so each rule is checked over far more inputs than a
sandbox could try: every number up to past the end of the table, the personality and socket
arguments including upper-bit tricks, and the foreign ABIs. The real-sandbox counterpart is
test_seccomp_docker.py.
"""

from __future__ import annotations

import errno
import platform
import random
import struct

import pytest

from supervisor.linux import seccomp
from supervisor.sandbox.host import hostlayout
from tests.security import docker_denied_syscalls as docker
from tests.security import docker_masked_paths as docker_paths

pytestmark = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="the fixture's syscall numbers are x86_64's"
)

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
ALLOW = 0x7FFF0000
KILL_PROCESS = 0x80000000
EPERM = 0x00050000 | errno.EPERM
ENOSYS = 0x00050000 | errno.ENOSYS
X32_BIT = 0x40000000


def run(nr: int, *args: int, arch: int = AUDIT_ARCH_X86_64) -> int:
    """The filter's verdict (SECCOMP_RET_*) for one syscall, as the kernel would compute it."""
    program = seccomp.default_bpf()
    full = (list(args) + [0] * 6)[:6]
    data = struct.pack("=IIQ6Q", nr & 0xFFFFFFFF, arch, 0, *full)
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = struct.unpack_from("=HBBI", program, pc * 8)
        pc += 1
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("=I", data, k)[0]
        elif code == 0x54:  # and #k
            acc &= k
        elif code == 0x05:  # ja
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):  # jeq, jgt, jge, jset #k
            taken = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"opcode {code:#x} at {pc - 1} is not modelled here")


def expected(name: str) -> int:
    return ENOSYS if name in seccomp.ENOSYS else EPERM


@pytest.mark.parametrize("name", sorted({**docker.DENIED, **docker.ENOSYS}))
def test_each_syscall_docker_refuses_is_refused(name: str) -> None:
    nr = {**docker.DENIED, **docker.ENOSYS}[name]
    assert run(nr) == expected(name), name


def test_the_refusals_are_ours_by_name_too() -> None:
    # The profile names each of them (not only the guard's ENOSYS for a number it lacks).
    ours = set(seccomp.denied_syscalls()) | set(seccomp.ENOSYS)
    assert set(docker.DENIED) | set(docker.ENOSYS) <= ours


def test_numbers_we_keep_agree_with_libseccomp_where_it_knows_them() -> None:
    import pyseccomp as sc  # noqa: PLC0415

    ours = {**docker.DENIED, **docker.ENOSYS, **docker.NR}
    for name, nr in seccomp.X86_64_NUMBERS.items():
        assert ours.get(name, nr) == nr, name
    for name, nr in {**ours, **seccomp.X86_64_NUMBERS}.items():
        known = int(sc.resolve_syscall(sc.Arch.X86_64, name))
        assert known < 0 or known == nr, (name, known, nr)


def test_ordinary_syscalls_pass() -> None:
    # read, write, openat, close, mmap, fork, execve, wait4, getrandom, memfd_create, statx,
    # clone with thread flags, socket(AF_INET), personality query.
    for nr in (0, 1, 257, 3, 9, 57, 59, 61, 318, 319, 332):
        assert run(nr) == ALLOW, nr
    assert run(56, 0x003D0F00) == ALLOW  # glibc's pthread_create flags
    assert run(docker.NR["socket"], 2, 1, 0) == ALLOW
    assert run(docker.NR["personality"], 0xFFFFFFFF) == ALLOW


def in_table(nr: int) -> bool:
    return any(lo <= nr <= hi for lo, hi in seccomp.X86_64_TABLE)


def test_numbers_outside_the_table_answer_enosys_and_the_table_covers_every_rule() -> None:
    for nr in range(0, 1200):
        verdict = run(nr)
        if not in_table(nr):
            assert verdict == ENOSYS, nr
        else:
            assert verdict in (ALLOW, EPERM, ENOSYS), (nr, hex(verdict))
    for nr in (X32_BIT - 1, 0x20000000, 0x3FFF0000):
        assert run(nr) == ENOSYS, hex(nr)
    assert all(in_table(nr) for nr in docker.DENIED.values())


def test_foreign_abis_are_killed() -> None:
    # i386 numbers differ (unshare is 310 there): a denylist keyed on x86_64 numbers would
    # miss them, so any call through int 0x80 or the x32 bit kills the process.
    for nr in (0, 20, 310, 425, 1000):
        assert run(nr, arch=AUDIT_ARCH_I386) == KILL_PROCESS, nr
    for nr in (0, 272, 425, 512, 547):
        assert run(X32_BIT | nr) == KILL_PROCESS, nr


def persona_allowed(value: int) -> bool:
    return value in docker.PERSONALITY_ALLOWED


def test_personality_allows_exactly_dockers_values() -> None:
    nr = docker.NR["personality"]
    rng = random.Random(18)  # fixed seed: the same values every run
    values = set(docker.PERSONALITY_ALLOWED)
    values |= {1 << b for b in range(64)}
    values |= {0xFFFFFFFF & ~(1 << b) for b in range(32)}
    values |= {v | 1 << b for v in docker.PERSONALITY_ALLOWED for b in range(33)}
    values |= {rng.getrandbits(32) for _ in range(3000)}
    values |= {rng.getrandbits(32) & 0x20008 | 1 << 32 for _ in range(20)}
    values |= {1 << 32 | v for v in docker.PERSONALITY_ALLOWED}
    for value in sorted(values):
        verdict = run(nr, value)
        assert verdict == (ALLOW if persona_allowed(value) else EPERM), hex(value)


def test_persona_rules_spell_the_allowed_set() -> None:
    # The same claim on the rules themselves, for every 32-bit value built from the bits that
    # matter to them: any subset of PERSONA_FLAGS combined with none, one, two or all others.
    rules = seccomp.persona_rules()
    others = [1 << b for b in range(32) if not (1 << b) & sum(seccomp.PERSONA_FLAGS)]
    for free in (0, 0x8, 0x20000, 0x20008):
        bases = [0, sum(others)] + others + [a | b for a in others[:8] for b in others[-8:]]
        for base in bases:
            value = base | free
            refused = any(value & mask == want for mask, want in rules)
            assert refused == (value not in docker.PERSONALITY_ALLOWED), hex(value)


def test_socket_refuses_alg_and_vsock_on_the_low_32_bits() -> None:
    nr = docker.NR["socket"]
    refused = set(docker.SOCKET_REFUSED_FAMILIES.values())
    for family in range(64):
        for high in (0, 1 << 32, 0xFFFFFFFF << 32):
            verdict = run(nr, high | family, 1, 0)
            assert verdict == (EPERM if family in refused else ALLOW), hex(high | family)


def test_clone_refuses_every_namespace_flag() -> None:
    nr = docker.NR["clone"]
    for bit in range(32):
        flag = 1 << bit
        want = EPERM if flag & docker.CLONE_REFUSED_FLAGS else ALLOW
        assert run(nr, flag) == want, hex(flag)
        assert run(nr, flag | 0x10000 | 0x100) == want, hex(flag)


def test_masked_and_read_only_paths_cover_dockers() -> None:
    assert set(docker_paths.MASKED) <= set(hostlayout.MASKED)
    assert set(docker_paths.READ_ONLY) <= set(hostlayout.READ_ONLY)
    with open("/sys/devices/system/cpu/possible") as f:
        spec = f.read().strip()
    last = int(spec.replace(",", "-").split("-")[-1])
    assert docker_paths.MASKED_PER_CPU.format(n=0) in hostlayout.MASKED
    assert docker_paths.MASKED_PER_CPU.format(n=last) in hostlayout.MASKED
    # Nothing masked is also merely read-only (a mask is the stronger of the two).
    assert not set(hostlayout.MASKED) & set(hostlayout.READ_ONLY)
