"""Dropping privileges: the one order every process that enters a sandbox goes through.

The service's PID 1 (stage.py), `sandboxctl exec` and exec probes (enter.py) all call `drop`,
so the security-critical sequence exists once. Runs in forked children: raw calls only.

Order, and why:
  1. bounding set, while still root with CAP_SETPCAP (needed to drop from it);
  2. seccomp, if no_new_privs is off: without no_new_privs the kernel wants CAP_SYS_ADMIN to
     load a filter, which only this moment still has;
  3. supplementary groups, gid, uid (the permitted set kept across the switch, see caps.py);
  4. capability sets: what this uid is granted (the unit's list for root, nothing for another
     uid unless the unit lists capabilities explicitly), ambient included;
  5. the caller's last step as the final user with the final capabilities (the service's
     workdir, which must be reachable by the service itself);
  6. no_new_privs, then seccomp last, so the filter never has to allow our own setup calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from supervisor.linux import caps, users
from supervisor.linux.syscalls import PR_SET_NO_NEW_PRIVS, Syscalls
from supervisor.sandbox.wire.protocol import StageFailure


@dataclass(frozen=True)
class Privileges:
    caps: caps.CapPlan
    no_new_privs: bool
    seccomp_bpf: bytes | None


def _step(stage: str, what: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except OSError as err:
        raise StageFailure.from_oserror(stage, what, err) from None


def drop(
    sys: Syscalls,
    privileges: Privileges,
    identity: users.Identity,
    as_user: Callable[[], None] | None = None,
) -> None:
    """Become `identity` with only what `privileges` grants; StageFailure naming the step
    that failed. `as_user` runs at step 5."""
    plan, bpf = privileges.caps, privileges.seccomp_bpf
    _step("capabilities", "drop bounding set", lambda: caps.drop_bounding(sys, plan))
    if bpf is not None and not privileges.no_new_privs:
        _step("seccomp", "load filter", lambda: sys.seccomp_load(bpf))
    _step(
        "user",
        f"switch to uid {identity.uid} gid {identity.gid}",
        lambda: caps.switch_user(sys, identity.uid, identity.gid, identity.groups),
    )
    granted = plan.granted(identity.uid)
    _step(
        "capabilities",
        "set capability sets",
        lambda: caps.set_sets(sys, granted, plan.last_cap),
    )
    if as_user is not None:
        as_user()
    if privileges.no_new_privs:
        _step("no_new_privs", "prctl(PR_SET_NO_NEW_PRIVS)",
              lambda: sys.prctl(PR_SET_NO_NEW_PRIVS, 1))  # fmt: skip
        if bpf is not None:
            _step("seccomp", "load filter", lambda: sys.seccomp_load(bpf))
