"""Docker parity from inside real sandboxes: what Docker's default profile refuses is refused
in a default unit, and the /proc and /sys paths Docker hides are hidden.

One daemon runs the probe (docker_parity_probe.py, with the facts in docker_denied_syscalls.py)
in five units:
- default: the unit file a user writes (only exec and the probe's bind are set);
- all-caps: every capability the host allows, default seccomp. The refusals must not depend
  on capabilities, and an EPERM here cannot be a missing capability's;
- control: the same capabilities and no filter. Each call must reach the kernel and fail there
  with another answer (the probe's arguments are harmless), so the EPERM above is the filter's;
- paths: a default unit that reads the masked and read-only paths and tries to undo them;
  paths-all-caps does the same with every capability (CAP_SYS_ADMIN included): the filter,
  not a missing capability, is what keeps the masks in place.
The three with every capability run with the host's ids (`user_namespace = "host"`): their
point is the host root's capabilities, which root of a user namespace of its own does not have
(the kernel would refuse many calls itself, and the control could not tell it from the filter).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import pytest

from supervisor.linux import seccomp
from supervisor.sandbox.host import hostlayout
from supervisor.unit.schema import CAPABILITIES
from tests.security import docker_denied_syscalls as docker
from tests.support.kit import cgroup_version, daemon_factory, uname
from tests.support.requires import requires_root

pytestmark = [
    pytest.mark.root,
    requires_root,
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="the probe's numbers are x86_64's"),
]

PROBE_DIR = Path(__file__).resolve().parent
REFUSED = {**docker.DENIED, **docker.ENOSYS}
# Linux runs uprobe without consulting any seccomp filter (and answers ENXIO outside a uprobe
# trampoline), so no sandbox can show the filter refusing it; test_seccomp_program.py shows
# the program does.
KERNEL_EXEMPT = {"uprobe": "the kernel lets uprobe past every seccomp filter"}
# Host switches that make the kernel itself answer EPERM even to a process with every
# capability: where one is on, the control cannot tell the filter's EPERM from the kernel's.
HOST_SWITCHES = {
    "init_module": ("/proc/sys/kernel/modules_disabled", "1"),
    "finit_module": ("/proc/sys/kernel/modules_disabled", "1"),
    "delete_module": ("/proc/sys/kernel/modules_disabled", "1"),
    "kexec_load": ("/proc/sys/kernel/kexec_load_disabled", "1"),
    "kexec_file_load": ("/proc/sys/kernel/kexec_load_disabled", "1"),
    "io_uring_setup": ("/proc/sys/kernel/io_uring_disabled", "2"),
}


def _unit(probe_args: list[str], security: str = "") -> str:
    argv = json.dumps(["/usr/bin/python3", "/probe/docker_parity_probe.py", *probe_args])
    host_ids = 'user_namespace = "host"\n' if "capabilities" in security else ""
    return f"""[service]
exec = {argv}
[sandbox]
mounts = [{{ source = "{PROBE_DIR}", target = "/probe" }}]
{host_ids}[restart]
policy = "no"
{security}"""


def _paths_spec() -> dict[str, list[str]]:
    # The same paths seen through other names: the mask is on the mount, not the name.
    aliases = ["/proc/self/root/proc/interrupts", "/proc/1/root/proc/interrupts"]
    for path in hostlayout.MASKED:
        if path.startswith("/sys/devices/system/cpu/"):
            aliases.append(path.replace("/sys/devices/system/cpu/", "/sys/bus/cpu/devices/"))
    return {"masked": list(hostlayout.MASKED), "read_only": list(hostlayout.READ_ONLY),
            "aliases": aliases}  # fmt: skip


def every_capability() -> list[str]:
    """Every capability this host lets the daemon hand out (its bounding set, which a
    container host may have trimmed)."""
    with open("/proc/self/status") as f:
        bounding = int(f.read().split("CapBnd:")[1].split()[0], 16)
    return [name for bit, name in enumerate(CAPABILITIES) if bounding >> bit & 1]


def _probe_all(daemon: Any, units: dict[str, str]) -> dict[str, dict[str, Any]]:
    names = {kind: uname(daemon, f"docker-{kind}") for kind in units}
    for kind, text in units.items():
        daemon.write_unit(names[kind], text)
    daemon.start()
    out = {}
    for kind, name in names.items():
        done = daemon.wait_unit(name, lambda u: u["state"] in ("exited", "failed"), 120)
        log = (daemon.logs / f"{name}.log").read_text()
        assert done["last_exit"] == "exit-code:0", (kind, done, log[-3000:])
        out[kind] = json.loads(log.strip().splitlines()[-1])
    assert daemon.stop() == 0
    return out


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, Any]]:
    """Probe output per unit kind (the keys of `units`)."""
    all_caps = "[security]\ncapabilities = " + json.dumps(every_capability()) + "\n"
    units = {
        "default": _unit(["syscalls"]),
        "all-caps": _unit(["syscalls"], all_caps),
        "control": _unit(["syscalls"], all_caps + 'seccomp = "unconfined"\n'),
        "paths": _unit(["paths", json.dumps(_paths_spec())]),
        "paths-all-caps": _unit(["paths", json.dumps(_paths_spec())], all_caps),
    }
    failure: BaseException | None = None
    with daemon_factory("sec") as make:
        # The factory's checks (daemon stopped, nothing left behind) run only if its body
        # returns normally: a failure is raised after them.
        try:
            out = _probe_all(make(), units)
        except BaseException as err:
            failure = err
    if failure is not None:
        raise failure
    return out


def _kernel_refuses_itself(name: str) -> str | None:
    """Why the kernel itself answers EPERM to `name` here, if a host switch says so."""
    switch = HOST_SWITCHES.get(name)
    if switch and os.path.exists(switch[0]) and Path(switch[0]).read_text().strip() == switch[1]:
        return f"{switch[0]} = {switch[1]}: the kernel itself refuses {name}"
    return None


def refusal(name: str) -> str:
    """What our profile answers: EPERM, or ENOSYS where a fallback exists."""
    return "ENOSYS" if name in seccomp.ENOSYS else "EPERM"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_each_syscall_docker_refuses_is_refused_in_a_default_unit(
    runs: dict[str, dict[str, Any]], name: str
) -> None:
    if name in KERNEL_EXEMPT:
        pytest.skip(KERNEL_EXEMPT[name])
    assert runs["default"]["denied"][name] == refusal(name), name


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_the_refusal_does_not_depend_on_capabilities(
    runs: dict[str, dict[str, Any]], name: str
) -> None:
    if name in KERNEL_EXEMPT:
        pytest.skip(KERNEL_EXEMPT[name])
    assert runs["all-caps"]["denied"][name] == refusal(name), name


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_without_the_filter_the_call_reaches_the_kernel_and_does_nothing(
    runs: dict[str, dict[str, Any]], name: str
) -> None:
    # The probe's arguments make the kernel fail the call (or, for vhangup without a terminal,
    # do nothing), so its answer differs from the filter's: the refusal above is the filter's.
    answer = runs["control"]["denied"][name]
    assert not answer.startswith("not tried"), answer
    reason = _kernel_refuses_itself(name)
    if answer == "EPERM" and reason:
        pytest.skip(reason)
    if answer == refusal(name) == "ENOSYS":
        pytest.skip(f"this kernel has no {name}; the program test shows the filter's ENOSYS")
    assert answer != refusal(name), (name, answer)
    if name == "vhangup":
        assert answer == "ok", answer
    else:
        assert answer != "ok", (name, answer)


def test_clone_with_a_namespace_flag_is_refused(runs: dict[str, dict[str, Any]]) -> None:
    for kind in ("default", "all-caps"):
        clone = dict(runs[kind]["clone"])
        assert clone.pop("none") == "EINVAL", "clone itself must pass the filter"
        assert set(clone.values()) == {"EPERM"}, (kind, clone)
    assert set(runs["control"]["clone"].values()) == {"EINVAL"}, runs["control"]["clone"]


def test_personality_allows_only_dockers_values(runs: dict[str, dict[str, Any]]) -> None:
    allowed = {hex(v) for v in docker.PERSONALITY_ALLOWED}
    for kind in ("default", "all-caps"):
        for value, answer in runs[kind]["personality"].items():
            assert answer == ("ok" if value in allowed else "EPERM"), (kind, value, answer)
    # Without the filter the kernel takes them all (ADDR_NO_RANDOMIZE: ASLR off).
    assert runs["control"]["personality"]["0x40000"] == "ok"
    assert runs["default"]["personality"]["0x40000"] == "EPERM"


def test_alg_and_vsock_sockets_are_refused_whatever_the_upper_bits(
    runs: dict[str, dict[str, Any]],
) -> None:
    for kind in ("default", "all-caps"):
        sockets = dict(runs[kind]["socket"])
        assert sockets.pop("AF_UNIX") == "ok"
        assert set(sockets.values()) == {"EPERM"}, (kind, sockets)
    control = runs["control"]["socket"]
    assert "EPERM" not in control.values(), control


def test_io_uring_setup_is_refused(runs: dict[str, dict[str, Any]]) -> None:
    assert runs["default"]["denied"]["io_uring_setup"] == "EPERM"
    reason = _kernel_refuses_itself("io_uring_setup")
    if reason:
        pytest.skip(reason)
    # Without the filter, the kernel gets as far as reading the (NULL) parameters.
    assert runs["control"]["denied"]["io_uring_setup"] == "EFAULT"


def test_io_uring_through_a_foreign_abi_kills_the_caller(
    runs: dict[str, dict[str, Any]],
) -> None:
    # The i386 and x32 numbers are not the ones our rules name: without the architecture
    # check, int 0x80 would reach io_uring_setup (425 there too) past a denylist.
    for kind in ("default", "all-caps"):
        assert runs[kind]["foreign_abi"] == {"int80": "killed:SIGSYS", "x32": "killed:SIGSYS"}
    control = runs["control"]["foreign_abi"]
    assert control["x32"] == "exit:0", control
    if control["int80"] == "killed:SIGSEGV":
        pytest.skip("this kernel runs no 32-bit code (ia32_emulation off)")
    assert control["int80"] == "exit:0", control


def test_numbers_past_the_table_answer_enosys(runs: dict[str, dict[str, Any]]) -> None:
    assert set(runs["default"]["unknown"].values()) == {"ENOSYS"}, runs["default"]["unknown"]


PATH_RUNS = ("paths", "paths-all-caps")


@pytest.mark.parametrize("path", [*hostlayout.MASKED, "aliases"])
def test_masked_paths_are_hidden(runs: dict[str, dict[str, Any]], path: str) -> None:
    if path == "aliases":
        paths = _paths_spec()["aliases"]
    elif not os.path.lexists(path):
        pytest.skip(f"{path} is not on this kernel")
    else:
        paths = [path]
    for kind in PATH_RUNS:
        for p in paths:
            answer = runs[kind]["masked"][p]
            assert not answer.startswith("readable"), (kind, p, answer)


@pytest.mark.parametrize("path", hostlayout.READ_ONLY)
def test_read_only_paths_are_not_writable(runs: dict[str, dict[str, Any]], path: str) -> None:
    if not os.path.lexists(path):
        pytest.skip(f"{path} is not on this kernel")
    for kind in PATH_RUNS:
        seen = runs[kind]["read_only"][path]
        assert seen["ro_mount"] is True, (kind, seen)
        # In its own user namespace (the default unit) the host's root owns these files, so
        # the permission check refuses the write (EACCES) before the read-only mount would;
        # with host ids and every capability only the mount can, and does (EROFS).
        allowed = ("EROFS", "EACCES") if kind == "paths" else ("EROFS",)
        assert seen.get("open_for_write", "EROFS") in allowed, (kind, seen)


def test_a_root_service_cannot_unmask_or_remount(runs: dict[str, dict[str, Any]]) -> None:
    for kind in PATH_RUNS:
        attempts = runs[kind]["undo"]
        assert any(k.startswith("umount ") for k in attempts), attempts
        assert {"mount proc", "mount sysfs"} <= set(attempts)
        assert set(attempts.values()) == {"EPERM"}, (kind, attempts)
