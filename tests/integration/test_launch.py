"""Launching real sandboxes as root on this kernel: namespaces, root views, privileges, errors.

Each test launches through `supervisor.sandbox.host.launch` exactly as the daemon does (we are a
child subreaper), checks from the outside (/proc/<pid>/ns, the cgroup) and from the inside (the
probe's JSON), and leaves nothing behind: the module fixture compares the host's mount table.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.errors import LaunchError
from supervisor.linux.caps import mask_of
from supervisor.linux.syscalls import CLONE_NEWNET, REAL
from supervisor.sandbox.host.launch import EXEC_ONLY_CAPABILITIES, LaunchRequest, launch
from supervisor.unit.schema import DEFAULT_CAPABILITIES
from tests.support import harness

pytestmark = harness.LAUNCH_MARKS

# Autouse, module scope: every test runs forked directly and through a fork server.
launch_path = harness.launch_path


@pytest.fixture(scope="module", autouse=True)
def _host_untouched() -> Iterator[None]:
    harness.set_subreaper()
    before = harness.mountinfo()
    yield
    assert harness.mountinfo() == before, "a test left a mount on the host"


def test_every_namespace_differs_and_pid1_is_in_its_cgroup() -> None:
    spec = harness.unit(["/bin/sleep", "30"], name="nscheck")
    out = os.open("/dev/null", os.O_WRONLY)
    with harness.v1_cgroup() as procs:
        launched = launch(LaunchRequest(spec, procs, out, out, id_map=harness.id_map_for(spec)))
        try:
            launched.go()
            for ns in ("mnt", "pid", "uts", "ipc", "net", "cgroup", "user"):
                inner = os.readlink(f"/proc/{launched.pid}/ns/{ns}")
                assert inner != os.readlink(f"/proc/self/ns/{ns}"), ns
            # The user namespace is the default: root inside is the range's base outside.
            uids = Path(f"/proc/{launched.pid}/status").read_text().split("Uid:")[1].split()[:4]
            assert uids == [str(harness.ID_MAP[1])] * 4
            for path in procs:
                assert Path(path).read_text().split() == [str(launched.pid)]
            assert os.getpid() == int(
                Path(f"/proc/{launched.pid}/status").read_text().split("PPid:")[1].split()[0]
            ), "PID 1 re-parents to the subreaper"
        finally:
            os.kill(launched.pid, signal.SIGKILL)
            os.waitpid(launched.pid, 0)
            os.close(out)


def test_inside_view_of_a_default_sandbox() -> None:
    queue = subprocess.run(["ipcmk", "-Q"], capture_output=True, text=True, check=True)
    qid = queue.stdout.split()[-1]
    try:
        res = harness.run(harness.probe_unit("info", name="viewer", service={"env": {"A": "b"}}))
    finally:
        subprocess.run(["ipcrm", "-q", qid], check=True)
    assert res.exit_code == 0, res.stderr
    info = res.json()
    assert info["pid"] == 1
    assert info["ppid"] == 0
    assert info["pids"] == [1], "no host process is visible"
    assert info["hostname"] == "viewer"
    assert info["interfaces"] == {"lo": True}
    assert info["msg_queues"] == 0, "the host's SysV queue is not visible"
    want = mask_of(DEFAULT_CAPABILITIES)
    assert info["caps"] == {
        **dict.fromkeys(("CapInh", "CapPrm", "CapEff", "CapAmb"), want),
        "CapBnd": want | mask_of(EXEC_ONLY_CAPABILITIES),
    }
    assert info["no_new_privs"] == 1
    assert info["seccomp"] == 2
    assert (info["uid"], info["gid"], info["cwd"]) == (0, 0, "/")
    assert info["env"]["A"] == "b"
    assert info["env"]["HOSTNAME"] == "viewer"
    assert info["env"]["HOME"] == "/root"
    assert info["nofile"][0] == 1024
    assert info["core"] == [0, 0]
    assert info["stdin_is_null"]
    assert info["open_fds"] == [0, 1, 2, 3], "only stdio (and the probe's listdir fd) are open"
    # Root: a fresh tmpfs with the host's system dirs and a curated /etc, nothing else.
    assert set(info["root"]) == {
        "bin", "dev", "etc", "lib", "lib64", "proc", "probe", "run", "sbin", "sys", "tmp", "usr",
    }  # fmt: skip
    assert "shadow" not in info["etc"] and "gshadow" not in info["etc"]
    assert {"passwd", "group", "hosts", "hostname", "resolv.conf", "ld.so.cache"} <= set(
        info["etc"]
    )
    assert set(info["dev"]) == {
        "full", "null", "random", "tty", "urandom", "zero", "pts", "ptmx", "shm", "fd", "stdin",
        "stdout", "stderr",
    }  # fmt: skip
    mounts = info["mounts"]
    # The root is one read-only skeleton shared by every such sandbox, /etc in it (etcsnap.py):
    # its mount points and /etc's files are no mounts of their own, but for the host's
    # directories bound over it and the unit's own hostname and hosts, from its /dev tmpfs,
    # read-only.
    assert mounts["/"].startswith("ro,")
    assert mounts["/usr"].startswith("ro,")
    assert not {"/etc", "/etc/ld.so.cache", "/etc/passwd", "/etc/group"} & set(mounts)
    assert mounts["/etc/ssl"].startswith("ro,")
    for own in ("/etc/hostname", "/etc/hosts"):
        assert mounts[own].startswith("ro,") and mounts[own].endswith("|tmpfs"), own
    for path in ("/proc/sys", "/proc/irq", "/proc/bus", "/proc/fs"):
        assert mounts[path].startswith("ro,"), path
    for path in ("/proc/keys", "/proc/timer_list"):
        assert path in mounts, f"{path} is masked"
    assert mounts["/proc/acpi"].startswith("ro,") and mounts["/sys/firmware"].startswith("ro,")
    # Every masked directory shows the same empty read-only tmpfs: one filesystem, not one each.
    masked = info["masked_dirs"]
    assert set(masked) == {"/proc/acpi", "/sys/firmware"}
    assert {dev for dev, _, _ in masked.values()} == {masked["/proc/acpi"][0]}
    assert all(names == [] and write == "EROFS" for _, names, write in masked.values()), masked
    assert mounts["/sys"].startswith("ro,") and mounts["/sys"].endswith("|sysfs")
    for path in ("/tmp", "/run", "/dev"):
        assert mounts[path].endswith("|tmpfs"), path
    # /dev/shm: a 1777 directory of /dev's tmpfs, not a filesystem of its own (rootplan.py,
    # DEV_SIZE: one superblock and shrinker fewer per sandbox).
    assert "/dev/shm" not in mounts and info["shm"] == [0o1777, True]
    assert mounts["/dev/pts"].endswith("|devpts")
    assert info["writable"] == {
        "/": "EROFS", "/usr": "EROFS", "/etc": "EROFS", "/tmp": "ok", "/run": "ok",
        "/dev/shm": "ok",
    }  # fmt: skip


def test_tmp_and_run_are_binds_of_the_dev_tmpfs_exec_allowed_and_bounded_by_their_sum() -> None:
    """/tmp and /run are directories of /dev's tmpfs (rootplan.DEV_SIZE: no filesystem of their
    own), bound nosuid and nodev but executable, /dev itself noexec; their directories under
    /dev/pts are covered by devpts, and a sandbox filling /tmp stops at the sum of what /dev,
    /tmp and /run had before (with tmp_size = 1M: 64 MiB + 64 KiB + 1 MiB + 16 MiB)."""
    script = (
        "stat -c '%d' /dev /tmp /run /dev/shm | sort -u | wc -l; stat -c '%a' /tmp /run; "
        "grep -E ' /(tmp|run) ' /proc/self/mountinfo | cut -d' ' -f5,6; ls -A /dev/pts; "
        "cp /bin/true /tmp/t && /tmp/t && echo exec-tmp; "
        "cp /bin/true /dev/shm/t && { /dev/shm/t 2>/dev/null || echo noexec-shm; }; "
        "head -c 200M /dev/zero > /tmp/fill 2>/dev/null || echo full; stat -c '%s' /tmp/fill"
    )
    spec = harness.unit(["/bin/sh", "-c", script], sandbox={"tmp_size": "1M"})
    lines = harness.run(spec).stdout.decode().splitlines()
    assert lines[:3] == ["1", "1777", "755"], lines
    assert lines[3:5] == ["/tmp rw,nosuid,nodev,relatime", "/run rw,nosuid,nodev,relatime"], lines
    assert lines[5:8] == ["ptmx", "exec-tmp", "noexec-shm"], lines  # nothing else under /dev/pts
    assert lines[8] == "full"
    room = (64 << 20) + (64 << 10) + (1 << 20) + (16 << 20)
    assert (1 << 20) < int(lines[9]) <= room, lines


@pytest.mark.parametrize("userns", ["own", "host"])
def test_the_sandboxs_ping_group_range_is_set_from_outside_before_the_service(
    userns: str,
) -> None:
    # Written by the launcher in the namespaces it shares with PID 1 (stage.net_setup), from
    # an fd of /proc/sys opened before PID 1's fork, while PID 1 builds its root and pivots:
    # the service sees every group its user namespace maps (all of them without one), in its
    # own network namespace only; the host's range is untouched.
    with open("/proc/sys/net/ipv4/ping_group_range") as f:
        host_range = f.read()
    sandbox = {} if userns == "own" else {"user_namespace": "host"}
    res = harness.run(harness.probe_unit("info", name="pinger", sandbox=sandbox))
    assert res.exit_code == 0, res.stderr
    top = harness.ID_MAP[2] - 1 if userns == "own" else 2**31 - 1
    assert res.json()["ping_group_range"] == [0, top]
    with open("/proc/sys/net/ipv4/ping_group_range") as f:
        assert f.read() == host_range


def test_a_fresh_procfs_instance_sets_the_callers_network_namespace_only() -> None:
    # Syscalls.fresh_proc_sys (a spare's, made while idle, before the launcher unshares): a
    # net sysctl written through it is the writer's network namespace's at the time of the
    # write, the host's is untouched, and the instance is mounted nowhere.
    with open("/proc/sys/net/ipv4/ping_group_range") as f:
        host_range = f.read()
    with open("/proc/self/mountinfo") as f:
        mounts_before = f.read()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            proc_sys = REAL.fresh_proc_sys()
            with open("/proc/self/mountinfo") as f:
                unseen = f.read() == mounts_before
            REAL.unshare(CLONE_NEWNET)
            REAL.write_file("net/ipv4/ping_group_range", b"7 77", False, proc_sys)
            with open("/proc/sys/net/ipv4/ping_group_range") as f:
                code = 0 if unseen and f.read().split() == ["7", "77"] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with open("/proc/sys/net/ipv4/ping_group_range") as f:
        assert f.read() == host_range


def test_user_group_workdir_env_and_ambient_caps() -> None:
    spec = harness.probe_unit(
        "info",
        service={"user": "nobody", "group": "daemon", "workdir": "/tmp", "env": {"X": "1"}},
        security={"capabilities": ["NET_BIND_SERVICE"]},
    )
    info = harness.run(spec, extra_env={"NOTIFY_SOCKET": "/run/notify"}).json()
    assert (info["uid"], info["gid"], info["groups"]) == (65534, 1, [1])
    assert info["cwd"] == "/tmp"
    assert info["env"]["X"] == "1" and info["env"]["NOTIFY_SOCKET"] == "/run/notify"
    assert info["env"]["USER"] == "nobody"
    # /dev/shm is a directory of /dev's tmpfs now, 1777 whatever the umask: nobody writes it.
    assert info["writable"]["/dev/shm"] == "ok" and info["writable"]["/tmp"] == "ok"
    bit = 1 << 10
    assert info["caps"] == {
        **dict.fromkeys(("CapInh", "CapPrm", "CapEff", "CapAmb"), bit),
        "CapBnd": bit | mask_of(EXEC_ONLY_CAPABILITIES),
    }


def test_unconfined_and_without_no_new_privs() -> None:
    info = harness.run(
        harness.probe_unit("info", security={"seccomp": "unconfined", "no_new_privileges": False})
    ).json()
    assert info["seccomp"] == 0
    assert info["no_new_privs"] == 0
    # seccomp on, no_new_privs off: the filter is loaded while CAP_SYS_ADMIN is still held.
    info = harness.run(harness.probe_unit("info", security={"no_new_privileges": False})).json()
    assert (info["seccomp"], info["no_new_privs"]) == (2, 0)


@pytest.fixture
def busybox_root(tmp_path: Path) -> Path:
    if not os.path.exists("/usr/bin/busybox"):
        pytest.skip("busybox-static is not installed")
    root = tmp_path / "rootfs"
    for d in ("bin", "etc", "proc", "dev", "sys", "tmp", "run", "srv"):
        (root / d).mkdir(parents=True)
    (root / "bin/busybox").write_bytes(Path("/usr/bin/busybox").read_bytes())
    (root / "bin/busybox").chmod(0o755)
    for applet in ("sh", "cat", "ls", "id", "touch", "echo", "true", "hostname", "mount", "sleep"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/srv:/bin/sh\n"
    )
    (root / "etc/group").write_text("root:x:0:\napp:x:1000:\n")
    (root / "marker").write_text("lower\n")
    return root


def test_busybox_directory_root(busybox_root: Path) -> None:
    spec = harness.unit(
        ["/bin/sh", "-c", "ls /; id; cat /marker; touch /x 2>&1; echo rc=$?"],
        sandbox={"root": str(busybox_root)},
        service={"user": "app"},
    )
    res = harness.run(spec)
    text = res.stdout.decode()
    assert res.exit_code == 0, res.stderr
    assert "marker" in text and "usr" not in text.split()
    assert "uid=1000(app) gid=1000(app)" in text
    assert "lower" in text
    assert "Read-only file system" in text and "rc=1" in text


def test_overlay_on_a_directory_root_leaves_the_lower_untouched(
    busybox_root: Path, tmp_path: Path
) -> None:
    overlay = tmp_path / "overlay"
    spec = harness.unit(
        ["/bin/sh", "-c", "echo upper > /marker && echo new > /created && cat /marker"],
        sandbox={"root": str(busybox_root), "overlay": True},
    )
    res = harness.run(spec, overlay_dir=str(overlay))
    assert res.stdout.decode() == "upper\n", res.stderr
    assert (busybox_root / "marker").read_text() == "lower\n"
    assert not (busybox_root / "created").exists()
    assert (overlay / "upper/created").read_text() == "new\n"


def tree(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every entry under `root` with its mode, size, mtime and ctime: what a write would move."""
    found = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        found[str(path.relative_to(root))] = (
            st.st_mode,
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
        )
    return found


def test_a_rootfs_lacking_mount_points_starts_and_is_left_byte_for_byte(
    busybox_root: Path,
) -> None:
    for d in ("proc", "dev", "sys", "tmp", "run", "srv"):
        (busybox_root / d).rmdir()
    before = tree(busybox_root)
    script = (
        "ls -d /proc/self /dev/null /sys/kernel /tmp /run /data && echo ok > /tmp/t && "
        "cat /tmp/t; grep ' / ' /proc/mounts | cut -d' ' -f3,4 | cut -d, -f1; "
        "touch /x 2>&1; mkdir /newdir 2>&1; cat /marker"
    )
    spec = harness.unit(
        ["/bin/sh", "-c", script],
        sandbox={
            "root": str(busybox_root),
            "mounts": [{"type": "tmpfs", "target": "/data/cache"}],  # /data is missing too
        },
        service={"user": "app"},
    )
    res = harness.run(spec)
    out = res.stdout.decode()
    assert res.exit_code == 0, (out, res.stderr)
    lines = out.splitlines()
    assert sorted(lines[:6]) == ["/data", "/dev/null", "/proc/self", "/run", "/sys/kernel", "/tmp"]
    assert lines[6] == "ok", "/tmp is writable"
    assert lines[7] == "overlay ro", "the overlay over a read-only root is read-only"
    assert "Read-only file system" in out.split("\n", 8)[-1]
    assert out.endswith("lower\n")
    assert tree(busybox_root) == before, "the daemon wrote into the operator's rootfs"


def test_a_rootfs_with_its_mount_points_gets_no_overlay(busybox_root: Path) -> None:
    before = tree(busybox_root)
    spec = harness.unit(
        ["/bin/sh", "-c", "grep ' / ' /proc/mounts | cut -d' ' -f3,4 | cut -d, -f1"],
        sandbox={"root": str(busybox_root)},
    )
    res = harness.run(spec)
    assert res.stdout.decode().split() != [], res.stderr
    assert res.stdout.decode().split()[0] != "overlay"
    assert res.stdout.decode().split()[1] == "ro"
    assert tree(busybox_root) == before


def test_a_writable_rootfs_lacking_mount_points_is_refused_untouched(busybox_root: Path) -> None:
    (busybox_root / "proc").rmdir()
    before = tree(busybox_root)
    spec = harness.unit(["/bin/true"], sandbox={"root": str(busybox_root), "read_only": False})
    with pytest.raises(LaunchError) as info:
        harness.run(spec)
    assert info.value.stage == "plan"
    assert f"root directory {busybox_root} lacks /proc" in str(info.value)
    assert tree(busybox_root) == before


def test_a_complete_writable_rootfs_is_written_by_the_service(busybox_root: Path) -> None:
    # A writable root directory is not idmapped: the service writes it as its mapped ids, so
    # the operator gives the tree to the unit's range (as for a writable bind).
    base = harness.ID_MAP[1]
    for path in [busybox_root, *busybox_root.rglob("*")]:
        os.chown(path, base, base, follow_symlinks=False)
    spec = harness.unit(
        ["/bin/sh", "-c", "echo service > /written"],
        sandbox={"root": str(busybox_root), "read_only": False},
    )
    res = harness.run(spec)
    assert res.exit_code == 0, res.stderr
    written = busybox_root / "written"
    assert written.read_text() == "service\n"
    assert (written.stat().st_uid, written.stat().st_gid) == (base, base)


def test_a_writable_rootfs_of_host_ids_is_written_by_a_host_ids_unit(busybox_root: Path) -> None:
    spec = harness.unit(
        ["/bin/sh", "-c", "echo service > /written"],
        sandbox={"root": str(busybox_root), "read_only": False, "user_namespace": "host"},
    )
    res = harness.run(spec)
    assert res.exit_code == 0, res.stderr
    assert (busybox_root / "written").stat().st_uid == 0


def test_overlay_on_the_host_root(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    spec = harness.unit(
        [
            "/bin/sh",
            "-c",
            "echo cow > /usr/sandboxd-overlay-probe && cat /usr/sandboxd-overlay-probe",
        ],
        sandbox={"overlay": True},
    )
    res = harness.run(spec, overlay_dir=str(overlay))
    assert res.stdout == b"cow\n", res.stderr
    assert not Path("/usr/sandboxd-overlay-probe").exists()
    assert (overlay / "upper/usr/sandboxd-overlay-probe").read_text() == "cow\n"


def test_unit_mounts_and_devices(tmp_path: Path) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    hostids = tmp_path / "hostids"
    hostids.mkdir()
    (ro / "f").write_text("data\n")
    script = (
        "cat /srv/ro/f; touch /srv/ro/x 2>/dev/null || echo ro-denied; "
        "touch /srv/rw/y 2>/dev/null || echo rw-denied; touch /srv/host/z && echo host-ok; "
        "grep ' /scratch ' /proc/mounts; test -c /dev/net/tun && echo tun"
    )
    spec = harness.unit(
        ["/bin/sh", "-c", script],
        sandbox={
            "mounts": [
                {"source": str(ro), "target": "/srv/ro"},
                {"source": str(rw), "target": "/srv/rw", "read_only": False},
                {"source": str(hostids), "target": "/srv/host", "read_only": False,
                 "idmap": "host"},
                {"type": "tmpfs", "target": "/scratch", "size": "1M"},
            ],
            "devices": [{"path": "/dev/net/tun", "access": "rw"}],
        },
    )  # fmt: skip
    out = harness.run(spec).stdout.decode()
    # rw is root's 0755 on the host: the unit's root (its base uid there) may not write it;
    # with idmap = "host" root inside writes as the host's root.
    assert "data\nro-denied\nrw-denied\nhost-ok\n" in out, out
    assert "size=1024k" in out
    assert out.endswith("tun\n")
    assert not (rw / "y").exists() and not (ro / "x").exists()
    assert (hostids / "z").stat().st_uid == 0


def test_init_true_runs_tini_as_pid1_and_the_service_as_pid2() -> None:
    spec = harness.unit(
        ["/bin/sh", "-c", "echo $$; tr '\\0' ' ' < /proc/1/cmdline; echo; (sleep 0.2 &); true"],
        sandbox={"init": True},
    )
    res = harness.run(spec)
    lines = res.stdout.decode().splitlines()
    assert lines[0] == "2"
    assert lines[1].startswith("tini -- /bin/sh")
    assert res.exit_code == 0


def test_init_forwards_signals_and_exits_with_the_service() -> None:
    spec = harness.unit(["/bin/sleep", "30"], sandbox={"init": True})
    out = os.open("/dev/null", os.O_WRONLY)
    with harness.v1_cgroup() as procs:
        launched = launch(LaunchRequest(spec, procs, out, out, id_map=harness.id_map_for(spec)))
        launched.go()
        # tini blocks the signals it forwards before it forks the service; a SIGTERM before
        # that meets a namespace init without a handler, and the kernel drops it.
        children = Path(f"/proc/{launched.pid}/task/{launched.pid}/children")
        deadline = time.monotonic() + 10
        while not children.read_text().split() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(launched.pid, signal.SIGTERM)
        _, status = os.waitpid(launched.pid, 0)
    os.close(out)
    # tini forwarded SIGTERM to sleep (PID 2) and exited with 128 + 15.
    assert os.waitstatus_to_exitcode(status) == 143


def test_user_namespace_maps_root_to_the_range_asked_for() -> None:
    spec = harness.unit(
        ["/bin/sh", "-c", "cat /proc/self/uid_map; id -u"],
        sandbox={"namespaces": ["pid", "mount", "uts", "ipc", "net", "cgroup", "user"]},
    )
    res = harness.run(spec, id_map=(0, 3 << 20, 65536))
    assert res.stdout.split() == [b"0", str(3 << 20).encode(), b"65536", b"0"], res.stderr


def test_a_user_namespace_without_a_range_is_refused() -> None:
    spec = harness.unit(
        ["/bin/true"],
        sandbox={"namespaces": ["pid", "mount", "uts", "ipc", "net", "cgroup", "user"]},
    )
    with pytest.raises(LaunchError) as info:
        launch(LaunchRequest(spec, [], 1, 2))  # the daemon always gives one; the port checks
    assert info.value.stage == "plan" and "id range" in info.value.message


@pytest.mark.parametrize(
    ("sections", "stage", "needle"),
    [
        ({"service": {"exec": ["/nonexistent/binary"]}}, "exec", "No such file"),
        ({"service": {"exec": ["/bin/true"], "workdir": "/nope"}}, "workdir", "chdir /nope"),
        ({"service": {"exec": ["/bin/true"], "user": "ghost"}}, "user", "unknown user 'ghost'"),
        ({"service": {"exec": ["/bin/true"], "group": "ghosts"}}, "user", "unknown group"),
        (
            {
                "service": {"exec": ["/bin/true"]},
                "sandbox": {"mounts": [{"type": "tmpfs", "target": "/usr/not-here/x"}]},
            },
            "rootfs",
            "Read-only file system",
        ),
        (
            {
                "service": {"exec": ["/bin/true"]},
                "sandbox": {"mounts": [{"source": "/no/such/dir", "target": "/srv"}]},
            },
            "plan",
            "bind source /no/such/dir does not exist",
        ),
        (
            {"service": {"exec": ["/nonexistent/binary"]}, "sandbox": {"init": True}},
            "exec",
            "No such file",
        ),
    ],
)
def test_launch_errors_come_back_with_stage_and_message(
    sections: dict[str, dict[str, object]], stage: str, needle: str
) -> None:
    # Copies: the parameters are shared by both launch paths.
    service = dict(sections["service"])
    argv = service.pop("exec")
    spec = harness.unit(**{**sections, "argv": argv, "service": service})  # type: ignore[arg-type]
    with pytest.raises(LaunchError) as info:
        harness.run(spec)
    err = info.value
    assert err.stage == stage
    assert needle in err.message
    assert err.reason.startswith(f"launch-error:{stage}: ")


def test_a_failed_cgroup_join_fails_the_launch_before_any_namespace() -> None:
    spec = harness.unit(["/bin/true"])
    out = os.open("/dev/null", os.O_WRONLY)
    try:
        with pytest.raises(LaunchError) as info:
            launch(
                LaunchRequest(
                    spec,
                    ["/sys/fs/cgroup/pids/no-such-cgroup/cgroup.procs"],
                    out,
                    out,
                    id_map=harness.id_map_for(spec),
                )
            )
    finally:
        os.close(out)
    assert info.value.stage == "cgroup"
    assert "No such file" in info.value.message


# The service's view of its fds: number -> (a fifo, opened read-only, the line waiting in it).
FD_REPORT = r"""
import fcntl, json, os, stat, sys
listing = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
out = {}
for fd in map(int, sys.argv[1:]):
    mode = os.fstat(fd).st_mode
    access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    out[fd] = [stat.S_ISFIFO(mode), access == os.O_RDONLY, os.read(fd, 100).decode()]
print(json.dumps({"open": listing, "kept": out}))
"""


@pytest.mark.parametrize("init", [False, True], ids=["no-init", "init"])
def test_kept_fds_arrive_under_their_numbers_and_nothing_else_leaks(init: bool) -> None:
    # Two output-pipe read ends as the daemon holds them (close-on-exec): one at a low number,
    # which a fork server's launcher receives its own fds on, and one far above.
    pipes = [os.pipe(), os.pipe()]
    low = pipes[0][0]
    high = fcntl.fcntl(pipes[1][0], fcntl.F_DUPFD_CLOEXEC, 200)
    kept = [low, high]
    for n, (_, w) in enumerate(pipes):
        os.write(w, f"line {n}\n".encode())
    out_r, out_w = os.pipe()
    spec = harness.unit(
        [harness.HOST_PYTHON, "-c", FD_REPORT, *map(str, kept)], sandbox={"init": init}
    )
    try:
        with harness.v1_cgroup() as procs:
            try:
                launched = launch(
                    LaunchRequest(spec, procs, out_w, out_w, keep_fds=kept, id_map=harness.ID_MAP)
                )
            finally:
                os.close(out_w)
            launched.go()
            data = b""
            while chunk := os.read(out_r, 65536):
                data += chunk
            _, status = os.waitpid(launched.pid, 0)
    finally:
        os.close(out_r)
        for fd in (*pipes[0], *pipes[1], high):
            os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, data
    report = json.loads(data)
    assert report["kept"] == {
        str(low): [True, True, "line 0\n"],
        str(high): [True, True, "line 1\n"],
    }, "the same pipes' read ends, under the daemon's numbers"
    # Besides stdio and the kept fds, only the one os.listdir held while listing.
    listdir_fd = min(n for n in range(3, 1 << 20) if n not in kept)
    assert report["open"] == sorted({0, 1, 2, *kept, listdir_fd}), "nothing else leaked"


@pytest.mark.parametrize("twice", [False, True], ids=["stdout", "twice"])
def test_bad_keep_fds_fail_the_launch_at_plan(twice: bool) -> None:
    out = os.open("/dev/null", os.O_WRONLY)
    dup = os.dup(out)
    keep = [dup, dup] if twice else [out]
    try:
        with pytest.raises(LaunchError) as info:
            launch(
                LaunchRequest(
                    harness.unit(["/bin/true"]), [], out, out, keep_fds=keep, id_map=harness.ID_MAP
                )
            )
    finally:
        os.close(out)
        os.close(dup)
    assert info.value.stage == "plan" and "keep_fds: fd" in info.value.message


def test_a_mount_point_swapped_for_a_symlink_is_refused_and_nothing_lands_on_the_host(
    busybox_root: Path, tmp_path: Path
) -> None:
    # The tree's owner turns /tmp into a link to a host directory: PID 1 makes and checks the
    # mount point in its parent opened without following links (mkdir_nofollow), so the
    # sandbox's /tmp tmpfs never lands on the host directory.
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (busybox_root / "tmp").rmdir()
    (busybox_root / "tmp").symlink_to(host_dir)
    spec = harness.unit(["/bin/true"], sandbox={"root": str(busybox_root)})
    with pytest.raises(LaunchError) as info:
        harness.run(spec)
    assert info.value.stage == "rootfs"
    assert "/tmp resolves through a symlink; refusing to follow it" in info.value.message
    assert list(host_dir.iterdir()) == []
