"""A sandbox root's mount plan as data: the operations PID 1 applies, in order.

Computed in the daemon (host/rootplan.py), sent to the fork server inside the launch plan
(plancodec.py), applied by PID 1 before exec (child/rootfs.py). Plain frozen dataclasses, so
the plan can be compared whole in tests and encoded without a schema of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from supervisor.linux.syscalls import MS_NODEV, MS_NOEXEC, MS_NOSUID

INIT_PATH = "/dev/init"  # where init = true binds tini: outside any unit mount
NOSUID_NODEV = MS_NOSUID | MS_NODEV
NOSUID_NODEV_NOEXEC = MS_NOSUID | MS_NODEV | MS_NOEXEC


@dataclass(frozen=True)
class Mkdir:
    path: str
    mode: int = 0o755
    parents: bool = False  # only for unit mount targets: our own tree is created top-down
    check: bool = False  # the path is inside an untrusted tree: refuse symlinks


@dataclass(frozen=True)
class Mount:
    """mount(2). `layers` are (option, host path) pairs, e.g. ("lowerdir", "/usr"): PID 1 opens
    each path without following symlinks and passes `option=/proc/self/fd/N` before `data`."""

    source: str | None
    target: str
    fstype: str | None
    flags: int
    data: str | None = None
    layers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Bind:
    """Bind `source` (a host path, looked at by the daemon) on `target`, creating the target.
    PID 1 opens `source` without following symlinks and mounts that fd (see the docstring).

    `remount` is None for a plain bind, else the complete flags of the MS_REMOUNT that follows:
    the wanted ones plus those of the source's mount (see the module docstring).

    `own`: `source` is no host path but one PID 1 made itself in a filesystem it mounted
    for this sandbox (its /dev tmpfs), where nothing else can swap it: mounted by its path,
    without the open and close of a host source.
    """

    source: str
    target: str
    is_dir: bool
    remount: int | None
    check: bool = False
    own: bool = False


@dataclass(frozen=True)
class Symlink:
    target: str
    path: str


@dataclass(frozen=True)
class WriteFile:
    path: str
    data: bytes


@dataclass(frozen=True)
class WriteInRoot:
    """Write a file into an untrusted tree (an image's root) with `path` resolved inside
    `root`: a symlink in it (absolute or through "..") is followed as if `root` were "/", and
    the walk may not leave `root`'s own filesystem (no magic link, no mount crossed). Creates
    `path`'s parent when it is a top-level directory the tree lacks; a path that cannot be
    resolved so (its directory missing, a mount in the way) is left alone (child/rootfs.py)."""

    root: str
    path: str  # absolute, as the sandbox names it
    data: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Mask:
    """Hide a path: /dev/null over a file, an empty read-only tmpfs over a directory. `like`:
    a directory masked before, whose tmpfs is bound here instead of mounting another one, so
    one filesystem hides every directory (each tmpfs is a superblock of its own, and every
    memory cgroup on the host keeps a slot for each superblock's shrinker)."""

    path: str
    is_dir: bool
    like: str = ""


@dataclass(frozen=True)
class ReadOnly:
    path: str
    remount: int


@dataclass(frozen=True)
class RemountRoot:
    path: str
    flags: int


@dataclass(frozen=True)
class PivotRoot:
    new_root: str


@dataclass(frozen=True)
class Hold:
    """A host path the launcher mounts with the host's privileges, for PID 1 to bind.

    Only in a user namespace: the unit's mapped root cannot enter the daemon's 0700
    directories (overlay and notify socket dirs, the image layer store), and only the host's
    root may make an idmapped mount (it needs CAP_SYS_ADMIN in the filesystem's own user
    namespace). The launcher, still host root, opens `source` without following a symlink,
    makes a detached copy of it (open_tree), sets `attrs` (MOUNT_ATTR_*, with the unit's id
    map when `idmap`) and attaches it in its own mount namespace at the plan's holding
    directory; the copy of that namespace PID 1 gets locks those attributes (mount_namespaces(7):
    a less privileged namespace cannot clear them). `owned` are directories under `source`
    (with `source` itself possibly among them) that the launcher creates when missing,
    with their modes, and gives to the unit's mapped root, e.g. an overlay's upper and work.
    """

    source: str
    is_dir: bool
    idmap: bool
    attrs: int = 0
    owned: tuple[tuple[str, int], ...] = ()


Op = (
    Mkdir
    | Mount
    | Bind
    | Symlink
    | WriteFile
    | WriteInRoot
    | Mask
    | ReadOnly
    | RemountRoot
    | PivotRoot
)


class SegmentedOps(tuple[Op, ...]):
    """Root ops that are the concatenation of `segments`, some of them tuples other plans
    carry too (by identity: host/plancache.py gives units that differ by their hostname alone
    the same ops before and after their own /etc/hostname and /etc/hosts). A tuple like any
    other to what reads it; the encoder (plancodec.py) sends each segment as its own part, so
    the fork server keeps the shared ones decoded once for all those units."""

    segments: tuple[tuple[Op, ...], ...]

    def __new__(cls, segments: tuple[tuple[Op, ...], ...]) -> SegmentedOps:
        made = super().__new__(cls, (op for segment in segments for op in segment))
        made.segments = segments
        return made


@dataclass(frozen=True)
class UnitMount:
    """A unit mount or a daemon-supplied bind, flattened from the schema."""

    target: str
    source: str | None = None  # None: tmpfs
    read_only: bool = True
    size: int | None = None
    mode: int = 0o1777
    # In a user namespace: an idmapped bind, the unit's ids being the host's ones ([[mount]]
    # idmap = "host"); else the unit's mapped ids own what the service writes there.
    idmap: bool = False


@dataclass(frozen=True)
class RootSpec:
    root: str  # "host" or a directory (ignored when `layers` is set)
    hostname: str
    read_only: bool = True
    overlay_dir: str | None = None  # set: copy-on-write layer with upper/work under it
    mounts: tuple[UnitMount, ...] = ()
    devices: tuple[tuple[str, bool], ...] = ()  # (path, read_only)
    init_binary: str | None = None
    sysfs: bool = True
    tmp_size: int = 64 << 20  # bytes, for /tmp and /run: never unbounded (half of the host RAM)
    run_size: int = 16 << 20
    # An image's layers (host directories of the layer store), top layer first: the root is
    # an overlay of them, read-only; `overlay_dir` gives it a persistent upper, else the mount
    # points get a tmpfs upper private to the sandbox and the root is read-only.
    layers: tuple[str, ...] = ()
    # The /etc/resolv.conf a host root or an image gets instead of the host's or the image's
    # (bridge mode: the host's loopback nameservers are unreachable from the sandbox, and an
    # image's own file is usually missing or useless; linux/resolvconf.py). Never used for a
    # root directory: that is the operator's tree.
    resolv_conf: bytes | None = None
    # The unit has a user namespace: host sources are held by the launcher (Hold above).
    userns: bool = False
    # The shared read-only /etc snapshot (sandbox/host/etcsnap.py) a read-only host root binds
    # as its /etc; None: the curated files are copied or bound one by one (rootplan._etc).
    etc_snapshot: str | None = None
