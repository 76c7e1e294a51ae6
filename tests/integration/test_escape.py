"""The escape battery: from inside a default sandbox, as root, every attempt fails.

The probe (tests/probe/probe.py) tries each escape and reports what happened; each entry must
say "not escaped", and the reason is kept in the assertion message for the log.
"""

from __future__ import annotations

import os

import pytest

from tests.support import harness

pytestmark = harness.LAUNCH_MARKS

# Autouse, module scope: every test runs forked directly and through a fork server.
launch_path = harness.launch_path

BATTERY = (
    "mount", "load_module", "sysrq_trigger", "read_kcore", "mknod_block", "mknod_mem",
    "set_clock", "see_host_pid", "signal_host_pid", "read_shadow", "new_interface",
    "reach_outside", "user_namespace", "ptrace", "bpf", "keyctl", "host_dirs", "write_shared_etc",
    "unmount_shared_etc",
)  # fmt: skip


@pytest.fixture(scope="module")
def results(launch_path: str) -> dict[str, dict[str, object]]:
    harness.set_subreaper()
    before = harness.mountinfo()
    res = harness.run(harness.probe_unit("escape", str(os.getpid()), name="escapee"))
    assert harness.mountinfo() == before
    data: dict[str, dict[str, object]] = res.json()
    return data


@pytest.mark.parametrize("attempt", BATTERY)
def test_escape_attempt_fails(results: dict[str, dict[str, object]], attempt: str) -> None:
    outcome = results[attempt]
    assert outcome["escaped"] is False, f"{attempt} succeeded inside the sandbox: {outcome}"


def test_blocked_syscalls_answer_eperm(results: dict[str, dict[str, object]]) -> None:
    # EPERM from the seccomp filter (not ENOSYS, not a crash): callers see an ordinary error.
    for attempt in ("mount", "load_module", "user_namespace", "ptrace", "bpf", "keyctl"):
        assert results[attempt]["detail"] == "EPERM", (attempt, results[attempt])
    assert results["mknod_block"]["detail"] == "EPERM"
    assert results["set_clock"]["detail"] == "EPERM"
    # In its own user namespace (the default) the sandbox's root does not own the host's
    # files, so DAC answers first (EACCES); with host ids only the read-only bind stops root
    # (EROFS). That the bind is read-only either way: test_launch's mount-table test.
    assert results["write_shared_etc"]["detail"] in ("EROFS", "EACCES")


# What the kernel grants any process, so only the seccomp filter refuses it: a user namespace
# (the reason the profile denies unshare/clone of one), PTRACE_TRACEME, the session keyring and
# (where unprivileged_bpf_disabled is 0) some bpf commands.
SECCOMP_ONLY = ("user_namespace", "ptrace", "keyctl", "bpf")


def test_the_rest_is_refused_without_seccomp_by_capabilities_and_mounts_alone() -> None:
    # Defence in depth: with the filter off, dropped capabilities, nodev mounts, masked paths
    # and the namespaces still refuse every other attempt.
    res = harness.run(
        harness.probe_unit("escape", str(os.getpid()), security={"seccomp": "unconfined"})
    )
    data = res.json()
    for attempt in BATTERY:
        if attempt not in SECCOMP_ONLY:
            assert data[attempt]["escaped"] is False, (attempt, data[attempt])
