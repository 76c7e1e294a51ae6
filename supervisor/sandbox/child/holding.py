"""The launcher's part of a user namespace: make it, hold the plan's host sources, enter it.

Runs in the launcher (host root, single-threaded, after the cgroup join and before unshare),
so everything needing the host's privileges happens here and PID 1 inherits the result:
  1. the unit's user namespace: the one held for its range (`Syscalls.hold_userns`,
     linux/helduserns.py), or, the first time, a new one with its uid/gid maps written and
     held for the next launch (without a file to hold it at, one per launch: `make_userns`);
  2. a private mount namespace of the launcher's own (still the host's user namespace), "/"
     made private so nothing reaches the host, and a small tmpfs on the staging directory;
  3. each `Hold` (host/holdplan.py): its `owned` directories made and given to the unit's
     mapped root, its source opened without following a symlink, a detached copy of that mount
     (open_tree), its attributes (the id map, read-only, nosuid...) set (mount_setattr) and
     the copy attached at `<staging>/held/<i>` (move_mount);
  4. setns into the user namespace. The launcher then unshares the rest: the new mount
     namespace is a copy made for a less privileged user namespace, so the kernel locks every
     held mount's attributes there (mount_namespaces(7)): not even a CAP_SYS_ADMIN service
     can make an idmapped /usr writable. The uid maps are already written, so the daemon has
     nothing to do between the PID report and Go for them.
  5. `enter` returns an fd of the holding mount namespace (step 2), which the launcher closes
     only once it has reported PID 1: the last reference to a mount namespace takes its mounts
     down and waits for an RCU grace period (namespace_unlock), about 1 ms on our 2-CPU
     machine; dropped by the unshare of step 4 it is that much of every launch, dropped after
     the report it is off the launch's path.
Every fd made here is closed before the launcher forks PID 1, in every path (and each is
close-on-exec besides): nothing reaches the service.
"""

from __future__ import annotations

import errno

from supervisor.linux.syscalls import (
    CLONE_NEWNS,
    CLONE_NEWUSER,
    MOUNT_ATTR_IDMAP,
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
    MS_PRIVATE,
    MS_REC,
    HolderRoot,
    Syscalls,
)
from supervisor.sandbox.child import rootfs
from supervisor.sandbox.wire.mounts import NOSUID_NODEV, Hold
from supervisor.sandbox.wire.protocol import StageFailure

_NAMES = (
    (MOUNT_ATTR_RDONLY, "read-only"),
    (MOUNT_ATTR_NOSUID, "nosuid"),
    (MOUNT_ATTR_NODEV, "nodev"),
    (MOUNT_ATTR_NOEXEC, "noexec"),
)


def describe(hold: Hold) -> str:
    words = [name for attr, name in _NAMES if hold.attrs & attr]
    words = (["idmapped"] if hold.idmap else []) + words
    return f"hold {hold.source}" + (f" ({', '.join(words)})" if words else "")


def enter(
    sys: Syscalls,
    id_map: tuple[int, int, int],
    staging: str,
    holds: tuple[Hold, ...],
    held_at: str = "",
    *,
    holder: HolderRoot | None = None,
) -> int:
    """Steps 1-4 of the module docstring; StageFailure ("userns" or "rootfs") on failure.
    `held_at`: the file the range's namespace is held at (ChildPlan.userns_file), looked up
    through `holder` (the fork server's, ChildFds.holder) if given. Returns the
    fd of step 5, which the caller closes (PID 1 at once, the launcher after its report)."""
    inside, outside, count = id_map
    maps = f"{inside} {outside} {count}\n"
    try:
        userns = sys.hold_userns(maps, held_at, holder) if held_at else sys.make_userns(maps)
    except OSError as err:
        raise StageFailure.from_oserror("userns", "make the user namespace", err) from None
    holding = -1
    try:
        try:
            sys.unshare(CLONE_NEWNS)
            holding = sys.open_own_ns("mnt")
            sys.mount(None, "/", None, MS_REC | MS_PRIVATE, None)
            sys.mount("tmpfs", staging, "tmpfs", NOSUID_NODEV, "mode=0755,size=65536")
            sys.mkdir(f"{staging}/root", 0o755)
            sys.mkdir(f"{staging}/held", 0o755)
        except OSError as err:
            what = f"make the holding directory at {staging}"
            raise StageFailure.from_oserror("rootfs", what, err) from None
        for i, hold in enumerate(holds):
            try:
                hold_one(sys, hold, f"{staging}/held/{i}", userns, outside)
            except OSError as err:
                raise StageFailure.from_oserror("rootfs", describe(hold), err) from None
        try:
            sys.setns(userns, CLONE_NEWUSER)
        except OSError as err:
            raise StageFailure.from_oserror("userns", "enter the user namespace", err) from None
    except BaseException:
        if holding >= 0:
            sys.close(holding)
        raise
    finally:
        sys.close(userns)
    return holding


def hold_one(sys: Syscalls, hold: Hold, target: str, userns: int, owner: int) -> None:
    for path, mode in hold.owned:
        sys.mkdir(path, mode, parents=path == hold.source)
        sys.chown(path, owner, owner)
    try:
        source = sys.open_path(hold.source, hold.is_dir)
    except OSError as err:
        if err.errno == errno.ELOOP:
            # Word for word what PID 1 says without a user namespace.
            raise rootfs.symlink_in_path("bind source", hold.source) from None
        raise
    try:
        tree = sys.open_tree(source)
    finally:
        sys.close(source)
    try:
        attrs = hold.attrs | (MOUNT_ATTR_IDMAP if hold.idmap else 0)
        if attrs:
            try:
                sys.mount_setattr(tree, attrs, userns if hold.idmap else -1)
            except OSError as err:
                if hold.idmap and err.errno == errno.EINVAL:
                    raise OSError(
                        errno.EINVAL,
                        "its filesystem cannot be idmapped (the kernel supports idmapped "
                        "mounts of ext4, xfs, btrfs, tmpfs, overlayfs and a few others)",
                    ) from None
                raise
        if hold.is_dir:
            sys.mkdir(target, 0o755)
        else:
            sys.touch(target)
        sys.move_mount(tree, target)
    finally:
        sys.close(tree)
