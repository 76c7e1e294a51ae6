"""Capabilities, user resolution, the seccomp profile and the recording fake (no root)."""

from __future__ import annotations

import ast
import fcntl
import os
import signal
from pathlib import Path

import pytest

from supervisor.linux import caps, seccomp, users
from supervisor.linux.fake import RecordingSyscalls
from supervisor.linux.syscalls import (
    PR_CAP_AMBIENT,
    PR_CAPBSET_DROP,
    PR_SET_KEEPCAPS,
    REAL,
)

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/srv/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\naudio:x:29:other\n"


def test_masks_use_kernel_numbering() -> None:
    assert caps.mask_of(["CHOWN", "NET_BIND_SERVICE", "cap_sys_admin"]) == 1 | 1 << 10 | 1 << 21
    assert caps.names_of(1 << 10 | 1 << 40) == ["NET_BIND_SERVICE", "CHECKPOINT_RESTORE"]
    with pytest.raises(KeyError):
        caps.mask_of(["NOPE"])


def test_bounding_is_dropped_for_everything_not_kept() -> None:
    sys = RecordingSyscalls()
    caps.drop_bounding(sys, caps.CapPlan(bounding=0b101, root=0b101, non_root=0, last_cap=3))
    assert sys.calls == [("prctl", PR_CAPBSET_DROP, 1, 0), ("prctl", PR_CAPBSET_DROP, 3, 0)]


def test_user_switch_keeps_caps_only_across_the_switch_and_groups_come_first() -> None:
    sys = RecordingSyscalls()
    caps.switch_user(sys, 1000, 1000, [10, 1000])
    assert sys.calls == [
        ("prctl", PR_SET_KEEPCAPS, 1, 0),
        ("setgroups", [10, 1000]),
        ("setresgid", 1000),
        ("setresuid", 1000),
        ("prctl", PR_SET_KEEPCAPS, 0, 0),
    ]


def test_all_sets_then_ambient() -> None:
    sys = RecordingSyscalls()
    caps.set_sets(sys, 1 << 10, last_cap=40)
    assert sys.calls[0] == ("capset", 1 << 10, 1 << 10, 1 << 10)
    assert sys.calls[-1] == ("prctl", PR_CAP_AMBIENT, 2, 10)


def test_root_gets_the_list_and_another_user_nothing_unless_it_is_explicit() -> None:
    default = ("CHOWN", "KILL")
    implicit = caps.CapPlan.for_unit(None, default, 40)
    assert implicit.bounding == caps.mask_of(default)
    assert (implicit.granted(0), implicit.granted(65534)) == (caps.mask_of(default), 0)
    explicit = caps.CapPlan.for_unit(["NET_BIND_SERVICE"], default, 40)
    assert explicit.granted(0) == explicit.granted(1000) == explicit.bounding == 1 << 10
    assert caps.CapPlan.for_unit([], default, 40).granted(0) == 0


@pytest.mark.parametrize(
    ("user", "group", "want"),
    [
        ("root", None, users.Identity(0, 0, [0], "/root", "root")),
        ("app", None, users.Identity(1000, 1000, [10, 1000], "/srv/app", "app")),
        ("app", "wheel", users.Identity(1000, 10, [10], "/srv/app", "app")),
        ("4242", None, users.Identity(4242, 0, [0], "/", "4242")),
        ("1000", "29", users.Identity(1000, 29, [10, 29], "/srv/app", "app")),
    ],
)
def test_users_resolve_in_the_sandbox_files(
    user: str, group: str | None, want: users.Identity
) -> None:
    assert users.resolve(user, group, PASSWD, GROUP) == want


def test_root_needs_no_passwd_file() -> None:
    """A minimal rootfs without /etc/passwd still runs the default user (issue 20)."""
    assert users.resolve("root", None, "", "") == users.Identity(0, 0, [0], "/root", "root")
    with pytest.raises(users.UnknownPrincipal):
        users.resolve("app", None, "", "")


def test_unknown_names_are_errors() -> None:
    with pytest.raises(users.UnknownPrincipal, match="unknown user 'ghost'"):
        users.resolve("ghost", None, PASSWD, GROUP)
    with pytest.raises(users.UnknownPrincipal, match="unknown group 'ghosts'"):
        users.resolve("app", "ghosts", PASSWD, GROUP)


def test_default_profile_compiles_and_denies_the_docker_set() -> None:
    bpf = seccomp.default_bpf()
    assert len(bpf) > 0 and len(bpf) % 8 == 0
    denied = set(seccomp.denied_syscalls())
    assert {
        "mount", "umount2", "reboot", "kexec_load", "init_module", "finit_module", "bpf",
        "keyctl", "add_key", "request_key", "ptrace", "unshare", "setns", "open_by_handle_at",
        "swapon", "swapoff", "pivot_root", "clock_settime", "settimeofday", "acct", "quotactl",
        "perf_event_open", "lookup_dcookie", "userfaultfd", "delete_module", "io_uring_setup",
        "io_uring_enter", "io_uring_register", "sethostname", "pidfd_getfd", "mbind",
    } <= denied  # fmt: skip
    assert "clone3" in seccomp.ENOSYS and "clone3" not in denied
    assert seccomp.default_bpf() is bpf, "compiled once"


def test_recording_fake_fails_on_request() -> None:
    sys = RecordingSyscalls(fail={"mount": 13})
    with pytest.raises(PermissionError):
        sys.mount("a", "/b", None, 0, None)
    assert sys.names() == ["mount"]


def test_real_fd_placement_calls() -> None:
    r, w = os.pipe()  # close-on-exec, as the daemon's are
    fds = [r, w]
    try:
        up = REAL.dup_above(r, 500)
        fds.append(up)
        assert up >= 500 and fcntl.fcntl(up, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        target = REAL.dup_above(r, 600)  # a free number to place onto
        fds.append(target)
        REAL.dup_to(up, target)
        assert not os.get_inheritable(up) and os.get_inheritable(target)
        REAL.dup_to(r, r)  # dup2(n, n) alone would leave it close-on-exec
        assert os.get_inheritable(r)
        os.write(w, b"x")
        assert os.read(target, 1) == b"x", "the same pipe"
    finally:
        for fd in fds:
            os.close(fd)


def _signal_masks() -> dict[str, int]:
    """This process's ignored, caught and blocked signals, as the kernel holds them."""
    status = Path("/proc/self/status").read_text()
    fields = dict(line.split(":\t") for line in status.splitlines())
    return {key: int(fields[key], 16) for key in ("SigIgn", "SigCgt", "SigBlk")}


def test_reset_signals_leaves_every_disposition_and_the_mask_at_the_default() -> None:
    """What a launcher resets before its service inherits it (dispositions set to SIG_IGN
    survive execve, the mask is inherited): Python handlers (SIGINT's own and one set here),
    Python's SIG_IGN of SIGPIPE, a real-time signal (no enum member in signal.py) and a
    blocked signal, in a forked child."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGUSR1, lambda *_: None)
            signal.signal(signal.SIGRTMIN + 3, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
            before = _signal_masks()
            REAL.reset_signals()
            os.write(w, repr((before, _signal_masks())).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        before, after = ast.literal_eval(f.read())
    os.waitpid(pid, 0)
    assert before["SigIgn"] & (1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGRTMIN + 2))
    assert before["SigCgt"] & 1 << (signal.SIGUSR1 - 1) and before["SigBlk"]
    assert after["SigIgn"] == 0 and after["SigBlk"] == 0
    # Handlers installed in C behind Python's back (pytest's faulthandler) are not Python's to
    # know of: getsignal says None and they are left, as before.
    python_set = 1 << (signal.SIGUSR1 - 1) | 1 << (signal.SIGINT - 1)
    assert before["SigCgt"] & python_set == python_set and after["SigCgt"] & python_set == 0
