"""Device access control on the real kernel: the unit cgroup's allowlist, from inside a sandbox.

The sandboxes here are deliberately weak (host ids, seccomp unconfined, CAP_MKNOD kept, a host
directory holding device nodes bound in without nodev), so that the devices cgroup (v1) or the
BPF device filter (v2) is the only thing left between the service and the host's disk and
memory: creating /dev/mem (c 1:1) fails with EPERM, and opening pre-made nodes of the host's
disk and of /dev/mem fails with EPERM, while a `sandbox.devices` entry (/dev/net/tun) is bound
in and opens. A control sandbox whose cgroup has no device policy shows the same nodes are
otherwise reachable.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.cgroups import DeviceAccess, DeviceError, Limits, devices, devices_bpf
from supervisor.linux.bpf import BPF_CGROUP_DEVICE, BpfError, LibcBpf
from supervisor.unit.schema import DEFAULT_CAPABILITIES
from supervisor.unit.spec import UnitSpec
from tests.support.cgroup_sandbox import SandboxEnv, python_unit, sandbox_env
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root]
__all__ = ["sandbox_env"]  # the fixture, re-exported for pytest

PROBE = r"""
import errno, json, os, stat
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as err:
        return errno.errorcode.get(err.errno, str(err.errno))
def opener(path, flags=os.O_RDONLY):
    return lambda: os.close(os.open(path, flags))
tun = "/dev/net/tun"
print(json.dumps({
    "mknod_mem": attempt(lambda: os.mknod("/tmp/mem", stat.S_IFCHR | 0o600, os.makedev(1, 1))),
    "mknod_null": attempt(lambda: os.mknod("/tmp/nul", stat.S_IFCHR | 0o600, os.makedev(1, 3))),
    "open_disk": attempt(opener("/nodes/disk")),
    "open_mem": attempt(opener("/nodes/mem")),
    "open_tun_node": attempt(opener("/nodes/tun", os.O_RDWR)),
    "open_null": attempt(opener("/dev/null", os.O_RDWR)),
    "open_urandom": attempt(opener("/dev/urandom")),
    "open_ptmx": attempt(opener("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)),
    "open_tun": attempt(opener(tun, os.O_RDWR)) if os.path.exists(tun) else "absent",
}), flush=True)
"""


def _host_disk() -> tuple[int, int]:
    """major:minor of a real block device of this host (its first disk)."""
    for name in sorted(os.listdir("/sys/block")):
        if not name.startswith(("loop", "ram", "zram", "nbd")):
            major, minor = Path(f"/sys/block/{name}/dev").read_text().split(":")
            return int(major), int(minor)
    pytest.skip("no block device on this host")


@pytest.fixture
def nodes(tmp_path: Path) -> Path:
    """Device nodes made on the host (outside any device policy), in a dev-capable directory:
    what a careless bind mount or a shared volume could hand a sandbox."""
    d = tmp_path / "nodes"
    d.mkdir()
    os.mknod(d / "disk", stat.S_IFBLK | 0o600, os.makedev(*_host_disk()))
    os.mknod(d / "mem", stat.S_IFCHR | 0o600, os.makedev(1, 1))
    os.mknod(d / "tun", stat.S_IFCHR | 0o600, os.makedev(10, 200))
    return d


def _host_view(nodes: Path) -> dict[str, str]:
    """What this (test) process gets opening the nodes: the most a sandbox could get. (On a dev
    host that is itself confined, even root may get EPERM for the disk.)"""
    out = {}
    for key, name, flags in (
        ("open_disk", "disk", os.O_RDONLY),
        ("open_mem", "mem", os.O_RDONLY),
        ("open_tun_node", "tun", os.O_RDWR),
    ):
        try:
            os.close(os.open(nodes / name, flags))
            out[key] = "ok"
        except OSError as err:
            out[key] = errno.errorcode[err.errno or 0]
    return out


@pytest.fixture
def tun() -> Iterator[str]:
    if not os.path.exists("/dev/net/tun"):
        subprocess.run(["modprobe", "tun"], check=False, capture_output=True)
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun on this host")
    yield "/dev/net/tun"


def _weak_unit(name: str, nodes: Path, devices: list[dict[str, str]]) -> UnitSpec:
    return python_unit(
        name,
        PROBE,
        sandbox={
            "devices": devices,
            "mounts": [{"source": str(nodes), "target": "/nodes"}],
            # In a user namespace of its own the kernel refuses mknod and root-only nodes
            # itself: host ids leave the device policy as the only barrier under test.
            "user_namespace": "host",
        },
        # The default profile would refuse mknod itself (and MKNOD is not a default capability);
        # SYS_RAWIO is what /dev/mem asks for.
        security={
            "seccomp": "unconfined",
            "capabilities": [*DEFAULT_CAPABILITIES, "MKNOD", "SYS_RAWIO"],
        },
    )


def test_only_the_minimal_dev_and_listed_devices_open(
    sandbox_env: SandboxEnv, nodes: Path, tun: str
) -> None:
    env = sandbox_env
    spec = _weak_unit("dev", nodes, [{"path": tun, "access": "rw"}])
    limits = Limits.from_config(spec.unit.resources, spec.unit.sandbox.devices)  # as the engine
    cg = env.manager.create("dev", limits)
    got = json.loads(env.run(cg, spec))
    assert got == {
        "mknod_mem": "EPERM",  # creating /dev/mem: the cgroup refuses "m"
        "mknod_null": "EPERM",  # even of an allowed node: no mknod by default
        "open_disk": "EPERM",  # raw access to the host's disk
        "open_mem": "EPERM",  # the host's physical memory
        "open_tun_node": "ok",  # the rule is the node's number: a copy of tun opens too
        "open_null": "ok",
        "open_urandom": "ok",
        "open_ptmx": "ok",
        "open_tun": "ok",  # listed in sandbox.devices: bound in and allowed
    }
    if env.version == 1:
        listed = set(env.read("dev", "devices.list").splitlines())
        assert listed == {r.v1_line() for r in devices.DEFAULT_RULES} | {"c 10:200 rw"}


def test_unlisted_device_is_refused_and_the_control_without_policy_reaches_it(
    sandbox_env: SandboxEnv, nodes: Path
) -> None:
    """Not listed: tun is absent from /dev and its node refused. The same weak sandbox in a
    cgroup whose policy was lifted sees exactly what the host sees, so the EPERMs are the
    cgroup's doing, not nodev, seccomp or capabilities."""
    env = sandbox_env
    spec = _weak_unit("closed", nodes, [])
    got = json.loads(env.run(env.manager.create("closed", Limits()), spec))
    assert (got["open_tun"], got["open_tun_node"], got["mknod_null"]) == (
        "absent",
        "EPERM",
        "EPERM",
    )
    assert (got["open_disk"], got["open_mem"]) == ("EPERM", "EPERM")

    cg = env.manager.create("open", Limits())
    if env.version == 1:
        Path(env.file("open", "devices.allow")).write_text("a")
    else:
        devices_bpf.remove(LibcBpf(), env.file("open", ""))
    got = json.loads(env.run(cg, _weak_unit("open", nodes, [])))
    assert (got["mknod_null"], got["mknod_mem"]) == ("ok", "ok")
    assert got["open_tun_node"] == "ok"
    host = _host_view(nodes)
    assert {k: got[k] for k in host} == host


def test_non_device_paths_are_refused_before_anything_starts(
    sandbox_env: SandboxEnv, tmp_path: Path
) -> None:
    env = sandbox_env
    plain = tmp_path / "file"
    plain.write_text("")
    for path, reason in (
        ("/dev/shm", "is not a device node"),
        (str(plain), "is not a device node"),
        ("/dev/does-not-exist", "does not exist"),
    ):
        with pytest.raises(DeviceError, match=reason):
            env.manager.create("bad", Limits(devices=(DeviceAccess(path),)))
        assert env.manager.open("bad") is None, "a refused create leaves no cgroup"
    with pytest.raises(DeviceError, match="combination of r, w and m"):
        DeviceAccess("/dev/null", "rx")


@pytest.mark.cgroup_v2
def test_v2_filter_is_replaced_in_place_and_released_with_the_cgroup(
    sandbox_env: SandboxEnv, tun: str
) -> None:
    env = sandbox_env
    if env.version != 2:
        pytest.skip("BPF device filters are the v2 mechanism")
    bpf = LibcBpf()
    where = env.file("filt", "")
    cg = env.manager.create("filt", Limits())
    fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (first,) = bpf.prog_query(fd, BPF_CGROUP_DEVICE)
        cg.apply(Limits(pids_max=50))  # [resources] only: same program
        assert bpf.prog_query(fd, BPF_CGROUP_DEVICE) == [first]
        cg.apply(Limits(devices=(DeviceAccess(tun, "rw"),)))
        (second,) = bpf.prog_query(fd, BPF_CGROUP_DEVICE)
        assert second != first
    finally:
        os.close(fd)
    _gone(bpf, first)
    cg.destroy()
    _gone(bpf, second)


def _gone(bpf: LibcBpf, prog_id: int) -> None:
    """The kernel freed the program (nothing holds it: not the cgroup, not an fd of ours)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            os.close(bpf.prog_fd_by_id(prog_id))
        except BpfError as err:
            assert err.errno == errno.ENOENT
            return
        assert time.monotonic() < deadline, f"BPF program {prog_id} still loaded"
        time.sleep(0.05)


UNIFIED = "/sys/fs/cgroup/unified"  # a hybrid host's (empty) cgroup2 mount


@pytest.mark.cgroup_v1
@pytest.mark.skipif(
    not os.path.isfile(os.path.join(UNIFIED, "cgroup.procs")), reason="no hybrid cgroup2 mount"
)
def test_bpf_filter_is_loaded_and_enforced_on_a_hybrid_hosts_cgroup2(tmp_path: Path) -> None:
    """The v2 program through the real verifier on the dev host too: device filters apply to
    the cgroup2 hierarchy even when the controllers are in v1 hierarchies."""
    where = os.path.join(UNIFIED, f"sandboxd-test-bpf-{os.getpid()}")
    os.mkdir(where)
    bpf = LibcBpf()
    try:
        devices_bpf.install(bpf, where, devices.DEFAULT_RULES)
        probe = "head -c1 /dev/zero >/dev/null && echo zero=ok; exec 3<>/dev/net/tun && echo tun=ok"
        outside = subprocess.run(["/bin/bash", "-c", probe], check=False, capture_output=True)
        if outside.stdout != b"zero=ok\ntun=ok\n":
            pytest.skip("this host cannot open /dev/net/tun even without a filter")
        inside = subprocess.run(
            ["/bin/bash", "-c", f"echo $$ > {where}/cgroup.procs; {probe}"],
            check=False,
            capture_output=True,
            text=True,
        )
        assert inside.stdout == "zero=ok\n"
        assert "Operation not permitted" in inside.stderr
        devices_bpf.remove(bpf, where)
        fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert bpf.prog_query(fd, BPF_CGROUP_DEVICE) == []
        finally:
            os.close(fd)
    finally:
        os.rmdir(where)
