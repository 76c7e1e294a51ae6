"""A user namespace's root plan: host sources held by the launcher (host/holdplan.py), and the
launcher's side (child/holding.py), asserted without root through RecordingSyscalls."""

from __future__ import annotations

import errno

import pytest

from supervisor.linux.fake import RecordingSyscalls
from supervisor.linux.syscalls import (
    CLONE_NEWNS,
    CLONE_NEWUSER,
    MOUNT_ATTR_IDMAP,
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
    MS_RDONLY,
)
from supervisor.sandbox.child import holding
from supervisor.sandbox.host import holdplan, rootplan
from supervisor.sandbox.host.hostlayout import HostPath
from supervisor.sandbox.wire.mounts import (
    Bind,
    Hold,
    Mask,
    Mkdir,
    Mount,
    PivotRoot,
    RootSpec,
    UnitMount,
)
from supervisor.sandbox.wire.protocol import StageFailure
from tests.unit.sandbox.test_rootfs import layout

S = "/mnt"


def held(spec: RootSpec, **extra: HostPath) -> tuple[list[object], tuple[Hold, ...]]:
    host = layout(**extra)
    ops, holds = holdplan.hold_sources(rootplan.plan_root(spec, host), spec, S)
    return list(ops), holds


def test_the_host_root_is_built_under_the_staging_dir_and_usr_is_idmapped_read_only() -> None:
    ops, holds = held(RootSpec(root="host", hostname="web", userns=True))
    assert ops[-1] == PivotRoot("/mnt/root")
    usr = holds.index(Hold("/usr", True, True, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV))
    assert Bind(f"/mnt/held/{usr}", "/mnt/root/usr", True, None) in ops
    # /etc's directories and the device nodes are bound by PID 1 as they are (any uid may
    # reach them; /etc/ssl/private stays closed to root inside); nothing else is left.
    assert [h.source for h in holds] == ["/usr"]
    assert any(isinstance(op, Bind) and op.source == "/etc/ssl" for op in ops)
    assert any(isinstance(op, Bind) and op.source == "/dev/null" for op in ops)
    for op in ops:
        target = getattr(op, "target", None) or getattr(op, "path", "")
        assert not target.startswith("/mnt") or target.startswith("/mnt/root"), op


def test_unit_binds_are_idmapped_only_when_asked() -> None:
    spec = RootSpec(
        root="host",
        hostname="web",
        userns=True,
        mounts=(
            UnitMount("/srv/a", "/data"),
            UnitMount("/srv/b", "/data", read_only=False),
            UnitMount("/srv/c", "/data", read_only=False, idmap=True),
        ),
    )
    ops, holds = held(spec, __data=HostPath("dir"))
    by_target = {op.target: op for op in ops if isinstance(op, Bind)}
    plain_ro = holds[int(by_target["/mnt/root/srv/a"].source.rsplit("/", 1)[1])]
    plain_rw = holds[int(by_target["/mnt/root/srv/b"].source.rsplit("/", 1)[1])]
    mapped = holds[int(by_target["/mnt/root/srv/c"].source.rsplit("/", 1)[1])]
    assert plain_ro == Hold("/data", True, False, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID)
    assert plain_rw == Hold("/data", True, False, MOUNT_ATTR_NOSUID)
    assert mapped == Hold("/data", True, True, MOUNT_ATTR_NOSUID)


def test_an_overlay_dir_is_held_whole_and_owned_by_the_unit() -> None:
    spec = RootSpec(root="host", hostname="web", userns=True, overlay_dir="/var/lib/s/ov/web")
    ops, holds = held(spec)
    (overlay,) = [h for h in holds if h.source == "/var/lib/s/ov/web"]
    assert not overlay.idmap and ("/var/lib/s/ov/web", 0o700) in overlay.owned
    assert ("/var/lib/s/ov/web/upper/usr", 0o755) in overlay.owned
    assert not any(isinstance(op, Mkdir) and op.path.startswith("/var/lib") for op in ops)
    usr = next(op for op in ops if isinstance(op, Mount) and op.target == "/mnt/root/usr")
    i, lower = holds.index(overlay), next(p for o, p in usr.layers if o == "lowerdir")
    assert dict(usr.layers)["upperdir"] == f"/mnt/held/{i}/upper/usr"
    assert dict(usr.layers)["workdir"] == f"/mnt/held/{i}/work/usr"
    assert holds[int(lower.rsplit("/", 1)[1])] == Hold("/usr", True, True, MOUNT_ATTR_RDONLY)


def test_image_layers_are_idmapped_lower_layers() -> None:
    spec = RootSpec(root="host", hostname="x", userns=True, layers=("/store/b", "/store/a"))
    ops, holds = held(spec)
    root = next(op for op in ops if isinstance(op, Mount) and op.fstype == "overlay")
    lowers = [p for o, p in root.layers if o == "lowerdir"]
    assert [holds[int(p.rsplit("/", 1)[1])].source for p in lowers] == ["/store/b", "/store/a"]
    assert all(holds[int(p.rsplit("/", 1)[1])].idmap for p in lowers)
    # The read-only image's tmpfs upper is the sandbox's own, in its root, not held.
    assert dict(root.layers)["upperdir"] == "/mnt/root/upper"


def test_the_launcher_holds_then_enters_and_closes_every_fd() -> None:
    sys = RecordingSyscalls()
    holds = (Hold("/usr", True, True, MOUNT_ATTR_RDONLY), Hold("/x/f", False, False, 0))
    holding_ns = holding.enter(sys, (0, 65536, 65536), "/mnt", holds)
    names = sys.names()
    assert names[:2] == ["make_userns", "unshare"] and sys.calls[1] == ("unshare", CLONE_NEWNS)
    userns = 100  # the fake's first fd
    # The holding mount namespace, opened right after it was made, is the caller's to close.
    assert sys.calls[2] == ("open_own_ns", "mnt") and holding_ns == 101
    assert ("mount_setattr", 103, MOUNT_ATTR_RDONLY | MOUNT_ATTR_IDMAP, userns) in sys.calls
    assert ("move_mount", 103, "/mnt/held/0") in sys.calls
    assert ("touch", "/mnt/held/1") in sys.calls and ("move_mount", 105, "/mnt/held/1") in sys.calls
    assert not any(c[0] == "mount_setattr" and c[1] == 105 for c in sys.calls), "no attrs: none set"
    assert ("setns", userns, CLONE_NEWUSER) in sys.calls
    closed = [c[1] for c in sys.calls if c[0] == "close"]
    assert sorted(closed) == [100, 102, 103, 104, 105]


def test_a_held_user_namespace_is_joined_instead_of_made() -> None:
    sys = RecordingSyscalls()
    holding.enter(sys, (0, 65536, 65536), "/mnt", (), "/state/userns/65536-65536")
    assert sys.calls[0] == ("hold_userns", "0 65536 65536\n", "/state/userns/65536-65536")
    assert "make_userns" not in sys.names() and ("setns", 100, CLONE_NEWUSER) in sys.calls


def test_a_hold_that_fails_names_the_mount_and_closes_its_fds() -> None:
    sys = RecordingSyscalls(fail={"move_mount": errno.EPERM})
    with pytest.raises(StageFailure) as info:
        holding.enter(sys, (0, 65536, 65536), "/mnt", (Hold("/srv", True, True, 0),))
    assert info.value.stage == "rootfs"
    assert info.value.message == "hold /srv (idmapped): Operation not permitted"
    assert sorted(c[1] for c in sys.calls if c[0] == "close") == [100, 101, 102, 103]
    assert "setns" not in sys.names()


def test_owned_dirs_are_made_and_given_to_the_units_root() -> None:
    sys = RecordingSyscalls()
    hold = Hold("/ov", True, False, 0, (("/ov", 0o700), ("/ov/upper", 0o755)))
    holding.enter(sys, (0, 1 << 20, 65536), "/mnt", (hold,))
    assert ("chown", "/ov", 1 << 20, 1 << 20) in sys.calls
    assert ("chown", "/ov/upper", 1 << 20, 1 << 20) in sys.calls
    assert sys.names().index("chown") < sys.names().index("open_tree")


def test_a_symlinked_source_is_refused_as_without_a_user_namespace() -> None:
    sys = RecordingSyscalls(links={"/srv/app": "/etc"})
    with pytest.raises(StageFailure) as info:
        holding.enter(sys, (0, 65536, 65536), "/mnt", (Hold("/srv/app/ssl", True, False, 0),))
    assert info.value.stage == "rootfs" and info.value.errno == errno.ELOOP
    assert info.value.message.startswith("bind source /srv/app/ssl has a symlink in its path")
    assert "setns" not in sys.names() and ("close", 100) in sys.calls


def test_a_shared_mask_binds_the_first_masked_directory_where_the_root_is_built() -> None:
    ops, _ = held(RootSpec(root="host", hostname="web", userns=True))
    masks = [op for op in ops if isinstance(op, Mask) and op.is_dir]
    assert masks == [
        Mask("/mnt/root/proc/acpi", True),
        Mask("/mnt/root/sys/firmware", True, "/mnt/root/proc/acpi"),
    ]


def test_the_root_skeleton_is_held_idmapped_read_only_and_the_units_own_files_are_not() -> None:
    snap = "/var/lib/sandboxd/etc/abc"
    spec = RootSpec(root="host", hostname="web", userns=True, etc_snapshot=snap)
    ops, holds = held(spec, **{snap.replace("/", "__"): HostPath("dir")})
    # Root-owned inside, as the copies PID 1 wrote were, and read-only (locked by the copy).
    i = holds.index(
        Hold(snap, True, True, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
    )
    # The snapshot is the whole root skeleton, bound where the root is built.
    assert Bind(f"/mnt/held/{i}", "/mnt/root", True, None) in ops
    # hostname and hosts: written into the sandbox's /dev and bound read-only from there by
    # PID 1, never held.
    own = "/mnt/root/dev/pts/.sandboxd-etc-hostname"
    bound = [op for op in ops if isinstance(op, Bind) and op.target == "/mnt/root/etc/hostname"]
    assert [(op.source, op.remount is not None and op.remount & MS_RDONLY) for op in bound] == [
        (own, MS_RDONLY)
    ]
    assert not any(h.source.startswith("/mnt") for h in holds)
