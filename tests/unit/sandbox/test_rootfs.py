"""The mount plan, asserted without root through a fake host layout and RecordingSyscalls."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest

from supervisor.linux.fake import RecordingSyscalls
from supervisor.linux.syscalls import (
    MS_BIND,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    REAL,
)
from supervisor.sandbox.child import rootfs
from supervisor.sandbox.host import rootplan
from supervisor.sandbox.host.hostlayout import DEVICES, HostLayout, HostPath
from supervisor.sandbox.wire import mounts
from supervisor.sandbox.wire.mounts import (
    Bind,
    Mask,
    Mkdir,
    Mount,
    PivotRoot,
    ReadOnly,
    RemountRoot,
    RootSpec,
    Symlink,
    UnitMount,
    WriteFile,
    WriteInRoot,
)
from supervisor.sandbox.wire.protocol import StageFailure

NOSUID_SRC = 0x2


def layout(**extra: HostPath) -> HostLayout:
    entries = {
        "/usr": HostPath("dir"),
        "/bin": HostPath("link", "usr/bin"),
        "/lib": HostPath("link", "usr/lib"),
        "/mnt": HostPath("dir"),
        "/media": HostPath("dir"),
        "/etc/passwd": HostPath("file", data=b"root:x:0:0::/root:/bin/sh\n"),
        "/etc/ld.so.cache": HostPath("file", data=b"\0" * (rootplan.PAGE + 1)),
        "/etc/mime.types": HostPath("file"),  # too large to have been read: bound
        "/etc/ssl": HostPath("dir"),
        "/etc/localtime": HostPath("link", "/usr/share/zoneinfo/UTC"),
        "/proc/kcore": HostPath("file"),
        "/proc/acpi": HostPath("dir"),
        "/proc/sys": HostPath("dir"),
        "/sys/firmware": HostPath("dir"),
        **{f"/dev/{d}": HostPath("other") for d in DEVICES},
    }
    entries.update({k.replace("__", "/"): v for k, v in extra.items()})
    return HostLayout(entries)


def test_host_root_plan_shape() -> None:
    ops = rootplan.plan_root(RootSpec(root="host", hostname="web"), layout())
    assert ops[0] == Mount(None, "/", None, MS_REC | MS_PRIVATE), "propagation cut first"
    assert ops[1] == Mount("tmpfs", "/mnt", "tmpfs", mounts.NOSUID_NODEV, "mode=0755")
    assert Symlink("usr/bin", "/mnt/bin") in ops
    usr = next(op for op in ops if isinstance(op, Bind) and op.source == "/usr")
    assert usr.remount is not None and usr.remount & MS_RDONLY
    cache = next(op for op in ops if isinstance(op, Bind) and op.source == "/etc/ld.so.cache")
    assert cache.target == "/mnt/etc/ld.so.cache" and not cache.is_dir
    assert cache.remount is not None and cache.remount & MS_RDONLY, "shared, never writable"
    assert not any(isinstance(op, WriteFile) and op.path == "/mnt/etc/ld.so.cache" for op in ops)
    # A file of one page costs less copied than bound (two mount calls the kernel serializes).
    assert WriteFile("/mnt/etc/passwd", b"root:x:0:0::/root:/bin/sh\n") in ops
    assert WriteFile("/mnt/etc/hostname", b"web\n") in ops
    assert Symlink("/usr/share/zoneinfo/UTC", "/mnt/etc/localtime") in ops
    assert not any("shadow" in str(op) or "/home" in str(op) for op in ops)
    assert Mask("/mnt/proc/kcore", False) in ops and Mask("/mnt/proc/acpi", True) in ops
    assert any(isinstance(op, ReadOnly) and op.path == "/mnt/proc/sys" for op in ops)
    assert ops[-2] == RemountRoot("/mnt", MS_REMOUNT | MS_RDONLY | mounts.NOSUID_NODEV)
    assert ops[-1] == PivotRoot("/mnt")


def test_a_writable_host_root_gets_its_own_copy_of_etc_and_hostname_hosts_are_per_unit() -> None:
    # A read-only root shares the host's files (bound read-only); a writable one is the
    # service's to change, so it gets copies and never a bind of a host file.
    for read_only, hostname in ((True, "a"), (False, "b")):
        ops = rootplan.plan_root(RootSpec("host", hostname, read_only=read_only), layout())
        binds = {op.source for op in ops if isinstance(op, Bind)}
        big = b"\0" * (rootplan.PAGE + 1)
        copied = WriteFile("/mnt/etc/ld.so.cache", big) in ops
        assert ("/etc/ld.so.cache" in binds) is read_only and copied is not read_only
        assert WriteFile("/mnt/etc/passwd", b"root:x:0:0::/root:/bin/sh\n") in ops
        assert WriteFile("/mnt/etc/hostname", f"{hostname}\n".encode()) in ops
        hosts = next(op for op in ops if isinstance(op, WriteFile) and op.path.endswith("/hosts"))
        assert f"127.0.1.1\t{hostname}\n".encode() in hosts.data
        assert not binds & {"/etc/hostname", "/etc/hosts", "/etc/resolv.conf"}


def test_proc_is_mounted_before_its_masks_and_dev_before_binds_into_it() -> None:
    ops = rootplan.plan_root(RootSpec(root="host", hostname="x"), layout())
    index = {str(op): i for i, op in enumerate(ops)}
    proc = next(i for i, op in enumerate(ops) if isinstance(op, Mount) and op.fstype == "proc")
    assert proc < index[str(Mask("/mnt/proc/kcore", False))]
    dev = next(i for i, op in enumerate(ops) if isinstance(op, Mount) and op.target == "/mnt/dev")
    null = next(i for i, op in enumerate(ops) if isinstance(op, Bind) and op.source == "/dev/null")
    assert dev < null


def test_dev_shm_tmp_and_run_are_directories_of_the_dev_tmpfs_not_filesystems_of_their_own() -> (
    None
):
    """Three superblocks (and shrinkers, which every memory cgroup keeps a slot for) fewer per
    sandbox: /dev's tmpfs holds /dev/shm's 64 MiB, /tmp's and /run's too, with /dev's nosuid,
    nodev, noexec; /tmp and /run are binds of its directories under /dev/pts's mount point
    (covered by devpts last), nosuid and nodev but not noexec, bound after the masks (/run
    covers the skeleton's directory they are binds of)."""
    spec = RootSpec(root="host", hostname="x", tmp_size=1 << 20, run_size=2 << 20)
    ops = rootplan.plan_root(spec, layout())
    (dev,) = [op for op in ops if isinstance(op, Mount) and op.target == "/mnt/dev"]
    assert dev.flags == mounts.NOSUID_NODEV_NOEXEC and dev.fstype == "tmpfs"
    assert dev.data == f"mode=0755,size={(64 << 20) + (64 << 10) + (3 << 20)}"
    assert Mkdir("/mnt/dev/shm", 0o1777) in ops
    tmpfs = [op.target for op in ops if isinstance(op, Mount) and op.fstype == "tmpfs"]
    assert tmpfs == ["/mnt", "/mnt/dev"]  # the root's (no skeleton in this plan) and /dev's
    remount = MS_BIND | MS_REMOUNT | mounts.NOSUID_NODEV
    # Bound by path (own=True): PID 1 made them in its own tmpfs, there is no host path to open.
    tmp = ops.index(Bind("/mnt/dev/pts/.sandboxd-tmp", "/mnt/tmp", True, remount, own=True))
    run = ops.index(Bind("/mnt/dev/pts/.sandboxd-run", "/mnt/run", True, remount, own=True))
    # In a trusted tree the bind makes its mount point: no Mkdir of its own before it.
    assert Mkdir("/mnt/tmp") not in ops and Mkdir("/mnt/run") not in ops
    made = ops.index(Mkdir("/mnt/dev/pts/.sandboxd-tmp", 0o1777))
    assert ops.index(Mkdir("/mnt/dev/pts/.sandboxd-run", 0o755)) < run
    masks = [i for i, op in enumerate(ops) if isinstance(op, Mask)]
    devpts = next(i for i, op in enumerate(ops) if isinstance(op, Mount) and op.fstype == "devpts")
    assert made < max(masks) < tmp < run < devpts
    # A unit's own mount on /run takes its place: /dev holds /tmp's room alone then.
    mine = dataclasses.replace(spec, mounts=(UnitMount("/run", None),))
    ops = rootplan.plan_root(mine, layout())
    (dev,) = [op for op in ops if isinstance(op, Mount) and op.target == "/mnt/dev"]
    assert dev.data == f"mode=0755,size={(64 << 20) + (64 << 10) + (1 << 20)}"
    assert not [op for op in ops if isinstance(op, Bind) and op.target == "/mnt/run"]


def test_mkdir_gives_a_directory_its_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        REAL.mkdir(str(tmp_path / "shm"), 0o1777)
        REAL.mkdir(str(tmp_path / "private"), 0o700)
        REAL.mkdir(str(tmp_path / "shm"), 0o755)  # exists: left as it is
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shm").stat().st_mode) == 0o1777
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o700


def test_touch_makes_a_mount_point_file_and_leaves_whatever_is_there(tmp_path: Path) -> None:
    """A file bind's mount point is made by one mknod: an empty regular file, 0644 under the
    usual umask; an existing file keeps its content, and a symlink stays a link with nothing
    made where it points (mknod never follows its last component)."""
    old = os.umask(0o022)
    try:
        REAL.touch(str(tmp_path / "null"))
        (tmp_path / "kept").write_bytes(b"content")
        REAL.touch(str(tmp_path / "kept"))
        (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
        REAL.touch(str(tmp_path / "link"))
    finally:
        os.umask(old)
    made = (tmp_path / "null").lstat()
    assert stat.S_ISREG(made.st_mode) and stat.S_IMODE(made.st_mode) == 0o644 and not made.st_size
    assert (tmp_path / "kept").read_bytes() == b"content"
    assert (tmp_path / "link").is_symlink() and not (tmp_path / "elsewhere").exists()


def test_a_file_bind_makes_its_mount_point_with_one_call() -> None:
    """No lstat, open and close per file bind (a device, a mask's own file): one touch, which
    leaves an existing target alone; and a checked mount point the tree has (a directory, no
    link) is one lstat, not the four syscalls of a checked mkdir."""
    sys = RecordingSyscalls()
    rootfs.apply_op(sys, Bind("/dev/null", "/mnt/dev/null", False, None))
    assert sys.names() == ["touch", "open_path", "mount", "close"]
    sys = RecordingSyscalls()  # (the fake's kind() is not recorded: it says "dir" here)
    rootfs.apply_op(sys, Mkdir("/mnt/proc", check=True))
    assert sys.names() == []
    sys = RecordingSyscalls(kinds={"/mnt/proc": "file"})  # not a directory: the checked mkdir
    rootfs.apply_op(sys, Mkdir("/mnt/proc", check=True))
    assert sys.names() == ["mkdir"]


def test_staging_avoids_a_directory_holding_a_bind_source() -> None:
    spec = RootSpec(root="host", hostname="x", mounts=(UnitMount("/data", "/mnt/data"),))
    host = layout(__mnt__data=HostPath("dir"))
    assert rootplan.staging_dir(spec, host) == "/media"


def test_bind_remount_keeps_the_source_mounts_flags() -> None:
    spec = RootSpec(root="host", hostname="x", mounts=(UnitMount("/srv", "/data"),))
    ops = rootplan.plan_root(spec, layout(__data=HostPath("dir", flags=NOSUID_SRC | 0x8)))
    bind = next(op for op in ops if isinstance(op, Bind) and op.source == "/data")
    assert bind.remount == MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | 0x8
    assert bind.check, "unit mount targets are checked for symlinks"


def test_missing_bind_source_fails_at_plan_time() -> None:
    spec = RootSpec(root="host", hostname="x", mounts=(UnitMount("/srv", "/nope"),))
    with pytest.raises(StageFailure, match="bind source /nope does not exist"):
        rootplan.plan_root(spec, layout())


MOUNT_POINTS = ("/dev", "/proc", "/run", "/sys", "/tmp")


def rootfs_layout(*present: str, **extra: HostPath) -> HostLayout:
    """`layout()` with a root directory /rootfs holding `present` (default: every mount point)."""
    host = layout(__rootfs=HostPath("dir", flags=NOSUID_SRC), **extra)
    have = present or MOUNT_POINTS
    return dataclasses.replace(host, in_root={p: HostPath("dir") for p in have})


def test_directory_root_and_overlay() -> None:
    host = rootfs_layout()
    plain = rootplan.plan_root(RootSpec(root="/rootfs", hostname="x"), host)
    # Built on a fixed root-owned staging directory: the root's own host path is opened once,
    # as a bind source, and never walked again. Read-only from the start: nothing the plan
    # does can write into the operator's directory.
    ro = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID
    assert plain[1] == Bind("/rootfs", "/mnt", True, ro)
    assert not any("/rootfs" in str(vars(op)) for op in plain[2:])
    assert not any(isinstance(op, Mount) and op.fstype == "overlay" for op in plain)
    # and stays so: no second read-only remount of it at the end (one mount call fewer).
    assert not any(isinstance(op, RemountRoot) for op in plain)
    assert plain[-1] == PivotRoot("/mnt")
    over = rootplan.plan_root(RootSpec(root="/rootfs", hostname="x", overlay_dir="/var/o"), host)
    mount = next(op for op in over if isinstance(op, Mount) and op.fstype == "overlay")
    assert mount.target == "/mnt" and mount.data is None
    assert mount.layers == (
        ("lowerdir", "/rootfs"), ("upperdir", "/var/o/upper"), ("workdir", "/var/o/work"),
    )  # fmt: skip
    assert Mkdir("/var/o", 0o700, parents=True) in over and Mkdir("/var/o/work", 0o700) in over
    assert Mkdir("/var/o/upper", 0o755) in over, "the upper dir's mode is the root's mode"
    assert not any(isinstance(op, RemountRoot) for op in over), "overlay is the writable layer"
    assert not any(isinstance(op, WriteFile) for op in over), "never write into a user's rootfs"


def test_staging_for_a_directory_root_avoids_the_root_itself() -> None:
    host = layout(__mnt__rootfs=HostPath("dir"))
    assert rootplan.staging_dir(RootSpec(root="/mnt/rootfs", hostname="x"), host) == "/media"


def test_overlay_layers_are_mounted_by_fd_so_no_path_is_parsed_or_followed() -> None:
    # A "," or ":" in a path would split overlayfs's options: fds have neither.
    spec = RootSpec(root="/rootfs", hostname="x", overlay_dir="/a,b:c")
    sys = RecordingSyscalls()
    rootfs.apply(sys, rootplan.plan_root(spec, layout(__rootfs=HostPath("dir"))))
    opens = [c for c in sys.calls if c[0] == "open_path"][:3]
    assert opens == [("open_path", "/rootfs"), ("open_path", "/a,b:c/upper"),
                     ("open_path", "/a,b:c/work")]  # fmt: skip
    mount = next(c for c in sys.calls if c[0] == "mount" and c[3] == "overlay")
    assert mount[4:] == (
        MS_NOSUID,
        "lowerdir=/proc/self/fd/100,upperdir=/proc/self/fd/101,workdir=/proc/self/fd/102",
    )
    at = sys.calls.index(mount)
    assert sys.calls[at + 1 : at + 4] == [("close", 100), ("close", 101), ("close", 102)]


def test_host_root_overlay_layers_are_opened_without_symlinks() -> None:
    spec = RootSpec(root="host", hostname="x", overlay_dir="/var/o")
    sys = RecordingSyscalls(links={"/var/o/upper": "/etc"})  # planted in the daemon's tree
    with pytest.raises(StageFailure, match="overlay upperdir /var/o/upper/usr has a symlink"):
        rootfs.apply(sys, rootplan.plan_root(spec, layout()))
    assert not any(c[0] == "mount" and c[3] == "overlay" for c in sys.calls)


def test_a_bind_source_is_opened_without_symlinks_and_the_fd_is_mounted() -> None:
    spec = RootSpec(root="host", hostname="x", mounts=(UnitMount("/srv", "/data"),))
    sys = RecordingSyscalls()
    rootfs.apply(sys, rootplan.plan_root(spec, layout(__data=HostPath("dir"))))
    at = sys.calls.index(("open_path", "/data"))
    fd = 100 + sum(1 for c in sys.calls[:at] if c[0] == "open_path")
    assert sys.calls[at + 1 : at + 4] == [
        ("mount", f"/proc/self/fd/{fd}", "/mnt/srv", None, MS_BIND, None),
        ("close", fd),
        ("mount", None, "/mnt/srv", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID, None),
    ]
    # Every bind of a host path, directories and devices included, mounts an fd, never a
    # path; only what PID 1 made in its own /dev tmpfs (/tmp's and /run's directories) is
    # bound by its path, which nothing but PID 1 can reach yet.
    binds = [c for c in sys.calls if c[0] == "mount" and c[4] == MS_BIND and c[1] != c[2]]
    by_path = [c[1] for c in binds if not str(c[1]).startswith("/proc/self/fd/")]
    assert binds and by_path == ["/mnt/dev/pts/.sandboxd-tmp", "/mnt/dev/pts/.sandboxd-run"]


@pytest.mark.parametrize("root", ["host", "/rootfs"])
def test_a_bind_source_below_a_symlink_is_refused(root: str) -> None:
    """A neighbour with a writable /shared turned /shared/app into a link to /etc."""
    spec = RootSpec(root=root, hostname="x", mounts=(UnitMount("/ssl", "/shared/app/ssl"),))
    host = layout(__shared__app__ssl=HostPath("dir"), __rootfs=HostPath("dir"))
    sys = RecordingSyscalls(links={"/shared/app": "/etc"})
    with pytest.raises(StageFailure) as info:
        rootfs.apply(sys, rootplan.plan_root(spec, host))
    assert info.value.errno == 40
    assert info.value.message == (
        "bind source /shared/app/ssl has a symlink in its path; sandboxd never follows one "
        "there (name the real path)"
    )
    assert not any(c[0] == "mount" and c[2] == "/mnt/ssl" for c in sys.calls)


def test_a_root_directory_below_a_symlink_is_refused() -> None:
    sys = RecordingSyscalls(links={"/srv/roots": "/"})
    host = layout(__srv__roots__app=HostPath("dir"))
    host = dataclasses.replace(host, in_root={p: HostPath("link") for p in MOUNT_POINTS})
    with pytest.raises(StageFailure, match="bind source /srv/roots/app has a symlink"):
        rootfs.apply(sys, rootplan.plan_root(RootSpec(root="/srv/roots/app", hostname="x"), host))
    assert not any(c[0] == "pivot_root" for c in sys.calls)


def test_apply_records_the_mount_sequence_and_pivots_with_dot_dot() -> None:
    sys = RecordingSyscalls(kinds={"/mnt/etc/passwd": "file"})
    rootfs.apply(sys, rootplan.plan_root(RootSpec(root="host", hostname="x"), layout()))
    assert sys.calls[0] == ("mount", None, "/", None, MS_REC | MS_PRIVATE, None)
    pivot = sys.calls.index(("pivot_root", ".", "."))
    assert sys.calls[pivot - 1 : pivot + 3] == [
        ("chdir", "/mnt"),
        ("pivot_root", ".", "."),
        ("umount2", ".", 2),
        ("chdir", "/"),
    ]
    # Then the masks' sources are let go (rootfs.MaskSources), each opened once: /dev/null for
    # the masked files, the first masked directory's tmpfs for the others.
    assert [c[0] for c in sys.calls[pivot + 3 :]] == ["close", "close"]


def test_a_roots_masked_files_bind_one_fd_of_dev_null() -> None:
    # Every masked /proc file is /dev/null bound by the same fd, opened once for the root.
    files = [Mask(f"/mnt/proc/{name}", False) for name in ("kcore", "keys", "timer_list")]
    sys = RecordingSyscalls()
    rootfs.apply(sys, files)
    assert [c for c in sys.calls if c[0] == "open_path"] == [("open_path", "/dev/null")]
    binds = [c for c in sys.calls if c[0] == "mount"]
    assert binds == [("mount", "/proc/self/fd/100", op.path, None, MS_BIND, None) for op in files]
    assert sys.calls[-1] == ("close", 100)
    # One mask alone (apply_op without the root's sources) opens and closes its own.
    alone = RecordingSyscalls()
    rootfs.apply_op(alone, files[0])
    assert alone.names() == ["open_path", "mount", "close"]


def test_a_symlinked_target_in_a_rootfs_is_refused() -> None:
    host = layout(__rootfs=HostPath("dir"))
    sys = RecordingSyscalls(links={"/mnt/tmp": "/etc"})
    with pytest.raises(StageFailure, match="resolves through a symlink"):
        rootfs.apply(sys, rootplan.plan_root(RootSpec(root="/rootfs", hostname="x"), host))


def test_apply_names_the_failing_operation() -> None:
    sys = RecordingSyscalls(fail={"pivot_root": 22})
    with pytest.raises(StageFailure) as info:
        rootfs.apply(sys, [PivotRoot("/mnt")])
    assert info.value.stage == "rootfs"
    assert info.value.message == "pivotroot /mnt: Invalid argument"


# --- a root directory is never written: mount points it lacks come from a private overlay ---


def test_the_paths_a_root_directory_must_have() -> None:
    spec = RootSpec(
        root="/rootfs",
        hostname="x",
        mounts=(
            UnitMount("/srv/data/www", "/data"),  # parents first: /srv, /srv/data
            UnitMount("/srv/data/www/static", None),  # inside the bind above: not the root's
            UnitMount("/tmp/cache", None),  # inside our /tmp tmpfs
            UnitMount("/etc/app.conf", "/data/app_conf"),  # a file bind: the file must exist
        ),
    )
    host = rootfs_layout(__data=HostPath("dir"), __data__app_conf=HostPath("file"))
    assert rootplan.root_paths(spec, host) == [
        "/dev", "/etc", "/etc/app.conf", "/proc", "/run", "/srv", "/srv/data", "/srv/data/www",
        "/sys", "/tmp",
    ]  # fmt: skip
    assert rootplan.root_paths(RootSpec(root="host", hostname="x"), host) == []
    overlay = RootSpec(root="/rootfs", hostname="x", overlay_dir="/var/o")
    assert rootplan.root_paths(overlay, host) == [], "overlay = true writes into its upper"


def test_a_root_lacking_mount_points_gets_a_private_overlay_and_stays_read_only() -> None:
    host = rootfs_layout("/dev", "/tmp")
    ops = rootplan.plan_root(RootSpec(root="/rootfs", hostname="x"), host)
    assert ops[1:5] == [
        Mount("tmpfs", "/mnt", "tmpfs", mounts.NOSUID_NODEV, "mode=0700,size=1m"),
        Mkdir("/mnt/upper", 0o755),
        Mkdir("/mnt/work", 0o700),
        Mount("overlay", "/mnt", "overlay", MS_NOSUID, None,
              (("lowerdir", "/rootfs"), ("upperdir", "/mnt/upper"), ("workdir", "/mnt/work"))),
    ]  # fmt: skip
    assert not any(isinstance(op, Bind) and op.source == "/rootfs" for op in ops)
    assert ops[-2] == RemountRoot("/mnt", MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID)
    sys = RecordingSyscalls()
    rootfs.apply(sys, ops)
    # The lower layer is opened like a bind source: no symlink followed, mounted by fd.
    assert ("open_path", "/rootfs") in sys.calls


def test_a_writable_root_lacking_mount_points_is_refused_not_written() -> None:
    host = rootfs_layout("/dev", "/tmp", "/run")
    with pytest.raises(StageFailure) as info:
        rootplan.plan_root(RootSpec(root="/rootfs", hostname="x", read_only=False), host)
    assert info.value.message.startswith(
        "root directory /rootfs lacks /proc, /sys, where the sandbox mounts things, and "
        "sandboxd creates nothing in a root directory;"
    )


def test_a_complete_writable_root_is_bound_read_only_until_the_plan_is_done() -> None:
    ops = rootplan.plan_root(RootSpec(root="/rootfs", hostname="x", read_only=False),
                             rootfs_layout())  # fmt: skip
    assert ops[1] == Bind("/rootfs", "/mnt", True, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID)
    assert ops[-2] == RemountRoot("/mnt", MS_BIND | MS_REMOUNT | MS_NOSUID)


def test_a_link_in_the_existing_part_of_a_target_is_refused_before_any_mkdir() -> None:
    sys = RecordingSyscalls(links={"/mnt/srv": "/etc"})
    with pytest.raises(StageFailure, match="resolves through a symlink"):
        rootfs.apply(sys, [Mkdir("/mnt/srv/www", parents=True, check=True)])
    assert not any(c[0] == "mkdir" for c in sys.calls)


def test_a_host_root_gets_the_planned_resolv_conf_instead_of_the_hosts() -> None:
    host = layout(
        **{"/etc/resolv.conf": HostPath("link", "../run/systemd/resolve/stub-resolv.conf")}
    )
    plain = rootplan.plan_root(RootSpec(root="host", hostname="x"), host)
    assert Symlink("../run/systemd/resolve/stub-resolv.conf", "/mnt/etc/resolv.conf") in plain
    spec = RootSpec(root="host", hostname="x", resolv_conf=b"nameserver 192.0.2.53\n")
    ops = rootplan.plan_root(spec, host)
    # A copy in the root's private tmpfs: neither a bind nor a link reaches the host's file.
    assert WriteFile("/mnt/etc/resolv.conf", b"nameserver 192.0.2.53\n") in ops
    assert [op for op in ops if "resolv.conf" in str(op)] == [
        WriteFile("/mnt/etc/resolv.conf", b"nameserver 192.0.2.53\n")
    ]


RESOLV = b"nameserver 192.0.2.53\n"
LAYERS = ("/var/lib/sandboxd/layers/top", "/var/lib/sandboxd/layers/base")


@pytest.mark.parametrize("overlay_dir", [None, "/var/o"])
def test_an_image_gets_its_resolv_conf_written_inside_its_root_before_it_turns_read_only(
    overlay_dir: str | None,
) -> None:
    spec = RootSpec(root="host", hostname="x", layers=LAYERS, overlay_dir=overlay_dir,
                    resolv_conf=RESOLV)  # fmt: skip
    ops = rootplan.plan_root(spec, layout())
    write = WriteInRoot("/mnt", "/etc/resolv.conf", RESOLV)
    assert ops.count(write) == 1
    assert not any(isinstance(op, WriteFile | Symlink) and "resolv" in op.path for op in ops)
    at = ops.index(write)
    overlay = max(i for i, op in enumerate(ops) if isinstance(op, Mount) and op.target == "/mnt")
    assert ops[overlay].fstype == "overlay" and overlay < at
    # After every mount, so resolving the path may not walk onto one (RESOLVE_NO_XDEV refuses
    # /proc, /run, unit binds); then the read-only remount (a read-only image) and the pivot.
    assert all(not isinstance(op, Mount | Bind | Mask | ReadOnly) for op in ops[at + 1 :])
    tail = [RemountRoot("/mnt", MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID)] * (not overlay_dir)
    assert ops[at + 1 :] == [*tail, PivotRoot("/mnt")]
    sys = RecordingSyscalls()
    rootfs.apply(sys, ops)
    assert ("write_in_root", "/mnt", "/etc/resolv.conf", RESOLV, 0o644) in sys.calls


def test_only_an_image_with_a_planned_resolv_conf_gets_the_write() -> None:
    plain = rootplan.plan_root(RootSpec(root="host", hostname="x", layers=LAYERS), layout())
    assert not any(isinstance(op, WriteInRoot) for op in plain), "not bridge mode: left alone"
    host = rootplan.plan_root(RootSpec(root="host", hostname="x", resolv_conf=RESOLV), layout())
    assert not any(isinstance(op, WriteInRoot) for op in host), "a host root's /etc is a tmpfs"
    # A root directory is the operator's: even handed a resolv.conf, nothing is written in it.
    for spec in (RootSpec(root="/rootfs", hostname="x", resolv_conf=RESOLV),
                 RootSpec(root="/rootfs", hostname="x", overlay_dir="/var/o",
                          resolv_conf=RESOLV)):  # fmt: skip
        ops = rootplan.plan_root(spec, rootfs_layout())
        assert not any(isinstance(op, WriteInRoot | WriteFile) for op in ops)


@pytest.mark.parametrize("err", [2, 18, 40, 20, 21, 22, 38])  # ENOENT EXDEV ELOOP ... ENOSYS
def test_a_resolv_conf_the_image_has_no_place_for_is_left_alone(err: int) -> None:
    sys = RecordingSyscalls(fail={"write_in_root": err})
    rootfs.apply(sys, [WriteInRoot("/mnt", "/etc/resolv.conf", RESOLV), PivotRoot("/mnt")])
    assert "pivot_root" in sys.names()


def test_any_other_failure_to_write_inside_the_root_fails_the_launch() -> None:
    sys = RecordingSyscalls(fail={"write_in_root": 28})  # ENOSPC: the tmpfs upper is full
    with pytest.raises(StageFailure) as info:
        rootfs.apply(sys, [WriteInRoot("/mnt", "/etc/resolv.conf", RESOLV), PivotRoot("/mnt")])
    assert info.value.message.startswith("write /etc/resolv.conf in the root at /mnt")
    assert "pivot_root" not in sys.names()


def test_every_masked_directory_shares_one_empty_tmpfs() -> None:
    # One tmpfs superblock a sandbox, however many directories are masked (on hardware with a
    # thermal_throttle directory per CPU that is dozens): the later ones bind the first.
    host = layout(**{"/sys/devices/virtual/powercap": HostPath("dir")})
    ops = rootplan.plan_root(RootSpec(root="host", hostname="x"), host)
    masks = [op for op in ops if isinstance(op, Mask) and op.is_dir]
    assert masks == [
        Mask("/mnt/proc/acpi", True),
        Mask("/mnt/sys/firmware", True, "/mnt/proc/acpi"),
        Mask("/mnt/sys/devices/virtual/powercap", True, "/mnt/proc/acpi"),
    ]
    assert Mask("/mnt/proc/kcore", False) in ops  # a file still gets /dev/null
    sys = RecordingSyscalls()
    rootfs.apply(sys, masks)
    assert [c for c in sys.calls if c[0] == "mount"] == [
        ("mount", "tmpfs", "/mnt/proc/acpi", "tmpfs", MS_RDONLY | mounts.NOSUID_NODEV_NOEXEC,
         "size=0"),
        ("mount", "/proc/self/fd/100", "/mnt/sys/firmware", None, MS_BIND, None),
        ("mount", "/proc/self/fd/100", "/mnt/sys/devices/virtual/powercap", None, MS_BIND, None),
    ]  # fmt: skip
    # Opened like every bind source, no symlink followed, once for the root; its fd mounted.
    assert [c for c in sys.calls if c[0] == "open_path"] == [("open_path", "/mnt/proc/acpi")]
    # Without sysfs the /sys masks go, and the first /proc one still mounts its tmpfs.
    no_sys = rootplan.plan_root(RootSpec(root="host", hostname="x", sysfs=False), host)
    assert [op for op in no_sys if isinstance(op, Mask) and op.is_dir] == [masks[0]]


def test_a_failed_shared_mask_names_both_directories() -> None:
    op = Mask("/mnt/sys/firmware", True, "/mnt/proc/acpi")
    assert rootfs.describe(op) == "mask /mnt/sys/firmware (bind /mnt/proc/acpi)"


SNAP = "/var/lib/sandboxd/etc/abc"


def snapshot_layout() -> HostLayout:
    return layout(**{SNAP.replace("/", "__"): HostPath("dir")})


def test_a_read_only_host_root_binds_one_shared_root_skeleton() -> None:
    spec = RootSpec("host", "web", etc_snapshot=SNAP, mounts=(UnitMount("/srv/app", "/data"),))
    host = layout(**{SNAP.replace("/", "__"): HostPath("dir"), "__data": HostPath("dir")})
    entries = rootplan.etc_snapshot_entries(spec, host)
    # The snapshot holds the copies (whatever their size), the links and placeholders for
    # what cannot be copied (a directory, a file too large to have been read, the unit's own).
    assert ("passwd", "file", b"root:x:0:0::/root:/bin/sh\n") in entries
    assert ("ld.so.cache", "file", b"\0" * (rootplan.PAGE + 1)) in entries
    assert ("localtime", "link", b"/usr/share/zoneinfo/UTC") in entries
    assert ("mime.types", "empty", b"") in entries and ("ssl", "dir", b"") in entries
    assert entries[-2:] == (("hostname", "empty", b""), ("hosts", "empty", b""))
    # The root skeleton: the system trees' links and mount points, /etc's entries under etc/,
    # and every mount point the plan makes (a [[mount]]'s parents first), nothing else.
    skeleton = rootplan.root_skeleton_entries(spec, host)
    names = [name for name, _, _ in skeleton]
    assert [e for e in skeleton if not e[0].startswith("etc/")] == [
        ("usr", "dir", b""), ("bin", "link", b"usr/bin"), ("lib", "link", b"usr/lib"),
        ("etc", "dir", b""),
        ("dev", "dir", b""), ("proc", "dir", b""), ("run", "dir", b""), ("srv", "dir", b""),
        ("srv/app", "dir", b""), ("sys", "dir", b""), ("tmp", "dir", b""),
        ("run/.sandboxd-masked", "dir", b""),
    ]  # fmt: skip
    assert [name for name in names if name.startswith("etc/")] == [
        f"etc/{name}" for name, _, _ in entries
    ]
    ops = rootplan.plan_root(spec, host)
    binds = {op.target: op for op in ops if isinstance(op, Bind)}
    root = binds["/mnt"]
    assert ops[1] == root, "bound first: nothing the plan does can write into it"
    assert root.source == SNAP and root.is_dir
    assert root.remount is not None and root.remount & MS_RDONLY, "shared, never writable"
    assert "/mnt/etc" not in binds
    for name in ("ssl", "mime.types"):  # bound over their placeholders, read-only
        bound = binds[f"/mnt/etc/{name}"]
        assert bound.source == f"/etc/{name}" and bound.remount and bound.remount & MS_RDONLY
    # Nothing is written into the root, nor made there, but the unit's own hostname and hosts
    # in its /dev, under /dev/pts's mount point (covered by devpts), bound read-only over the
    # placeholders.
    written = [op.path for op in ops if isinstance(op, WriteFile)]
    assert written == ["/mnt/dev/pts/.sandboxd-etc-hostname", "/mnt/dev/pts/.sandboxd-etc-hosts"]
    remount = MS_BIND | MS_REMOUNT | MS_RDONLY | mounts.NOSUID_NODEV_NOEXEC
    assert binds["/mnt/etc/hostname"] == Bind("/mnt/dev/pts/.sandboxd-etc-hostname",
                                              "/mnt/etc/hostname", False, remount,
                                              own=True)  # fmt: skip
    devpts = next(op for op in ops if isinstance(op, Mount) and op.fstype == "devpts")
    assert ops.index(binds["/mnt/etc/hosts"]) < ops.index(devpts)
    assert not any(isinstance(op, Symlink) and op.path.count("/") == 2 for op in ops)
    # The masked directories are binds of the skeleton's empty directory, under /run's mount
    # point, bound before /run (a bind of /dev's tmpfs) covers it: no filesystem of their own.
    masks = [op for op in ops if isinstance(op, Mask) and op.is_dir]
    assert masks == [
        Mask("/mnt/proc/acpi", True, "/mnt/run/.sandboxd-masked"),
        Mask("/mnt/sys/firmware", True, "/mnt/run/.sandboxd-masked"),
    ]
    run = next(op for op in ops if isinstance(op, Bind) and op.target == "/mnt/run")
    assert ops.index(masks[-1]) < ops.index(run)
    # No remount of the root at the end: without MS_BIND it would be the state dir's
    # filesystem itself that turned read-only.
    assert not any(isinstance(op, RemountRoot) for op in ops)
    assert ops[-1] == PivotRoot("/mnt")


def test_a_mount_target_through_a_skeleton_link_is_left_out_of_the_skeleton() -> None:
    # /bin is a link to usr/bin: a placeholder under it could not be written, and a failed
    # write would cost every unit its skeleton for a while; left out, the launch of this unit
    # alone is refused (a mount target through a symlink).
    spec = RootSpec("host", "web", etc_snapshot=SNAP, mounts=(UnitMount("/bin/x", "/data"),))
    host = layout(**{SNAP.replace("/", "__"): HostPath("dir"), "__data": HostPath("dir")})
    names = [name for name, _, _ in rootplan.root_skeleton_entries(spec, host)]
    assert "bin" in names and not any(name.startswith("bin/") for name in names)


def test_a_bridge_units_resolv_conf_is_in_its_snapshot_and_a_writable_root_gets_none() -> None:
    spec = RootSpec("host", "web", resolv_conf=b"nameserver 10.0.0.1\n", etc_snapshot=SNAP)
    entries = rootplan.etc_snapshot_entries(spec, snapshot_layout())
    assert ("resolv.conf", "file", b"nameserver 10.0.0.1\n") in entries
    for other in (
        dataclasses.replace(spec, read_only=False),
        dataclasses.replace(spec, overlay_dir="/var/o"),
    ):
        assert not rootplan.shares_etc(other)
        ops = rootplan.plan_root(other, snapshot_layout())
        assert not any(isinstance(op, Bind) and op.source == SNAP for op in ops)
        assert WriteFile("/mnt/etc/passwd", b"root:x:0:0::/root:/bin/sh\n") in ops
