"""The sandbox's root, planned in the daemon: the mounts PID 1 applies (child/rootfs.py).

`plan_root()` is pure (host facts come in a `HostLayout`, probed by hostlayout.py), so unit
tests assert the whole plan; `apply()` runs it through a `Syscalls`. Everything happens in
PID 1's private mount namespace, which dies with the sandbox: a failed launch leaves no mount
behind on the host.

Fail closed: every mount, bind and read-only remount either succeeds or aborts the launch.
Threats this module answers:
- mount propagation: our mounts must not appear on the host, nor host mounts in here, so "/"
  is made recursively private first;
- a malicious rootfs: a symlink inside a root directory (e.g. DIR/tmp -> /etc) would point our
  mounts and writes at host paths, so every target must resolve to itself (a kernel
  filesystem's mount point is made in its parent opened with no symlink followed, and must
  not be one itself: syscalls.mkdir_nofollow); the one file
  written into an image (its /etc/resolv.conf in bridge mode, where a link is normal) is
  instead resolved inside the root (openat2 RESOLVE_IN_ROOT on the staging root's fd), so
  `/etc -> /tmp/x` or `resolv.conf -> ../../host/file` lands in the image, never on the host;
- a redirected source: a sandbox that can write a host directory can turn `shared/app` into a
  symlink to /etc, and a neighbour binding `shared/app/ssl` would get the host's /etc/ssl. So
  every host path the plan mounts (bind sources, the root directory, overlay layers) is opened
  by PID 1 with no symlink followed in any component (openat2 RESOLVE_NO_SYMLINKS), and that fd
  is what gets mounted, through /proc/self/fd/N: a path swapped after the open changes nothing
  (in a user namespace the launcher opens them, as the host's root, the same way: holdplan.py);
- a movable root directory: the root is bound (by fd) onto a fixed, root-owned staging
  directory (/mnt, ...) and built there, so no later step goes through its host path again;
- writing into an operator's root directory: it is bound read-only before the plan mounts
  anything on it, and mount points it lacks come from a private overlay with a tmpfs upper
  (`_directory_root`), so the directory is left byte for byte as it was;
- host secrets: root = "host" shows only /usr, /bin, /sbin, /lib* and a curated /etc, never
  /etc/shadow, /root, /home, /var, /run or other sandboxes' state;
- kernel interfaces: /proc and /sys paths that leak host memory or flip host switches are
  masked or read-only (the list is runc's);
- bind remounts keep the source's nosuid/nodev/noexec: a plain MS_RDONLY remount would drop
  them and turn a nosuid source into a setuid entry point.
"""

from __future__ import annotations

import os

from supervisor.linux.syscalls import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    PRESERVED_MOUNT_FLAGS,
)
from supervisor.sandbox.host.hostlayout import (
    DEVICES,
    ETC_ENTRIES,
    HOST_DIRS,
    MASKED,
    READ_ONLY,
    STAGING_CANDIDATES,
    HostLayout,
)
from supervisor.sandbox.wire.mounts import (
    INIT_PATH,
    NOSUID_NODEV,
    NOSUID_NODEV_NOEXEC,
    Bind,
    Mask,
    Mkdir,
    Mount,
    Op,
    PivotRoot,
    ReadOnly,
    RemountRoot,
    RootSpec,
    Symlink,
    WriteFile,
    WriteInRoot,
)
from supervisor.sandbox.wire.protocol import StageFailure

# The upper layer of a read-only root directory's overlay (see _directory_root): it holds only
# the mount points the directory lacks, so it is tiny.
ROOT_UPPER, ROOT_WORK, ROOT_UPPER_SIZE = "/upper", "/work", "1m"

# A host /etc file larger than this is bound into a read-only root, not copied (_etc).
PAGE = os.sysconf("SC_PAGE_SIZE")

# /dev is one tmpfs, and /dev/shm, /tmp and /run are directories of it rather than tmpfs of
# their own: a filesystem costs a superblock and a shrinker, and every memory cgroup on the
# host keeps a slot for every shrinker id (README, "What a sandbox costs, and why"), so each
# one fewer per sandbox makes every sandbox's memory cgroup cheaper. Its size is the sum of
# theirs: /dev/shm's 64 MiB and the 64 KiB the device nodes' tmpfs had here, plus /tmp's and
# /run's (`_kernel_filesystems`); the sandbox can fill any of them with the room the others
# leave, never more than all of them had together.
DEV_SIZE = (64 << 20) + (64 << 10)
# /tmp's and /run's directories in /dev's tmpfs, bound onto /tmp and /run: under /dev/pts's
# mount point, which devpts covers next, so no path in the sandbox reaches them but those binds.
OWN_DIRS_PREFIX = "/dev/pts/.sandboxd-"

DEV_LINKS = (
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
    ("pts/ptmx", "ptmx"),
)


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _overlay(target: str, flags: int, lower: str | tuple[str, ...], upper: str, work: str) -> Mount:
    # The layers travel as /proc/self/fd/N, never as paths in the options: no symlink in them
    # is followed, and a "," or ":" in a path cannot be misparsed by overlayfs. Several lower
    # layers (an image's, top first) are joined with ":" into one lowerdir by PID 1.
    lowers = (lower,) if isinstance(lower, str) else lower
    layers = (*(("lowerdir", path) for path in lowers), ("upperdir", upper), ("workdir", work))
    return Mount("overlay", target, "overlay", flags, None, layers)


def bind_sources(spec: RootSpec) -> list[str]:
    """Host paths the plan binds in besides the fixed ones (for `HostLayout.probe(extra=)`)."""
    paths = [m.source for m in spec.mounts if m.source] + [d for d, _ in spec.devices]
    return paths + ([spec.init_binary] if spec.init_binary else [])


def staging_dir(spec: RootSpec, host: HostLayout) -> str:
    """Where the root is assembled: a root-owned host directory that no sandbox can write or
    swap, and that holds no path the plan still has to open (it gets covered)."""
    sources = bind_sources(spec) + ([spec.overlay_dir] if spec.overlay_dir else [])
    sources += [spec.root] if spec.root != "host" else []
    sources += list(spec.layers)
    for cand in STAGING_CANDIDATES:
        found = host.get(cand)
        if found and found.kind == "dir" and not any(_under(p, cand) for p in sources):
            return cand
    raise StageFailure("rootfs", 2, "no free staging directory for the root (tried /mnt, ...)")


def _bind(
    host: HostLayout,
    source: str,
    target: str,
    read_only: bool,
    *,
    flags: int = 0,
    check: bool = False,
) -> Bind:
    found = host.get(source)
    if found is None or found.kind == "link":
        raise StageFailure("rootfs", 2, f"bind source {source} does not exist")
    wanted = flags | (MS_RDONLY if read_only else 0)
    remount = MS_BIND | MS_REMOUNT | wanted | (found.flags & PRESERVED_MOUNT_FLAGS)
    return Bind(source, target, found.kind == "dir", remount if wanted else None, check)


def _inner_ops(spec: RootSpec, host: HostLayout, s: str) -> list[Op]:
    """What goes on top of the root itself: kernel filesystems, unit mounts, init."""
    # A directory's or an image's content may be hostile.
    untrusted = spec.root != "host" or bool(spec.layers)
    ops = _kernel_filesystems(spec, host, s, untrusted)
    ops += _unit_mounts(spec, host, s, untrusted)
    if spec.init_binary:
        ops.append(_bind(host, spec.init_binary, s + INIT_PATH, True, flags=MS_NOSUID | MS_NODEV))
    return ops


def _made_in_root(ops: list[Op], s: str) -> dict[str, bool]:
    """Paths (as the sandbox names them) that `ops` would create in the root itself rather
    than in a filesystem they mounted first, each with whether it is a directory."""
    mounted: list[str] = []
    made: dict[str, bool] = {}

    def note(path: str, is_dir: bool) -> None:
        if _under(path, s) and path != s and not any(_under(path, m) for m in mounted):
            made.setdefault(path[len(s) :], is_dir)

    for op in ops:
        match op:
            case Mkdir(path, _, parents, _):
                parts = path[len(s) :].strip("/").split("/") if _under(path, s) else []
                steps = range(1, len(parts) + 1) if parents else [len(parts)]
                for n in steps:
                    note(s + "/" + "/".join(parts[:n]), True)
            case Bind(_, target, is_dir, _, _):
                note(target, is_dir)
                mounted.append(target)
            case Symlink(_, path) | WriteFile(path, _):
                note(path, False)
            case Mount(_, target, _, _, _, _) | Mask(target, _) | ReadOnly(target, _):
                mounted.append(target)
    return made


def root_paths(spec: RootSpec, host: HostLayout) -> list[str]:
    """The paths inside a root directory that the plan needs to exist there (mount points):
    what `HostLayout.with_root_paths` must look at before `plan_root`."""
    if spec.root == "host" or spec.overlay_dir is not None or spec.layers:
        return []
    s = staging_dir(spec, host)
    return sorted(_made_in_root(_inner_ops(spec, host, s), s))


def _missing_in_root(made: dict[str, bool], host: HostLayout) -> list[str]:
    # A symlink counts as present: the launch refuses it as a mount target, with its name,
    # and an overlay would not make it any less of a link.
    missing = []
    for path, is_dir in made.items():
        kind = host.in_root_kind(path)
        if kind is None or (is_dir and kind not in ("dir", "link")):
            missing.append(path)
    return sorted(missing)


def _directory_root(spec: RootSpec, host: HostLayout, s: str, inner: list[Op]) -> list[Op]:
    """A root directory is the operator's, and the daemon writes nothing into it.

    When it has every mount point the plan needs, it is bound read-only from the first
    operation on, so nothing the plan does can write into it (a mount point removed since
    the daemon looked makes the launch fail with EROFS, not a directory appear). When one is
    missing, a read-only root gets an overlay: the directory as its read-only lower layer and
    a small tmpfs, made in this mount namespace alone, as the upper one, where the mount
    points are made; the tmpfs is reachable only through the overlay (pivot_root detaches its
    mount) and ends with the namespace. A writable root without `overlay` is the service's to
    write, so a tmpfs upper would silently lose its writes: that is refused instead.
    """
    found = host.get(spec.root)
    keep = found.flags & PRESERVED_MOUNT_FLAGS if found else 0
    missing = _missing_in_root(_made_in_root(inner, s), host)
    if not missing:
        return [Bind(spec.root, s, True, MS_BIND | MS_REMOUNT | MS_RDONLY | keep)]
    if not spec.read_only:
        raise StageFailure(
            "rootfs",
            2,
            f"root directory {spec.root} lacks {', '.join(missing)}, where the sandbox mounts "
            "things, and sandboxd creates nothing in a root directory; with read_only = false "
            "the service writes into it directly, so create them there (mkdir) or set "
            "overlay = true",
        )
    upper, work = s + ROOT_UPPER, s + ROOT_WORK
    return [
        Mount("tmpfs", s, "tmpfs", NOSUID_NODEV, f"mode=0700,size={ROOT_UPPER_SIZE}"),
        Mkdir(upper, 0o755),
        Mkdir(work, 0o700),
        _overlay(s, keep, spec.root, upper, work),
    ]


def plan_root(spec: RootSpec, host: HostLayout) -> list[Op]:
    """Every operation, in order, that turns the host's mount tree into the sandbox's root."""
    s = staging_dir(spec, host)
    ops: list[Op] = [Mount(None, "/", None, MS_REC | MS_PRIVATE)]
    inner = _inner_ops(spec, host, s)
    found = host.get(spec.root)
    keep = found.flags & PRESERVED_MOUNT_FLAGS if found else 0
    bound_read_only = False  # the root is a read-only bind already, from its first operation
    if spec.layers:
        ops += _image_root(spec, s)
    elif spec.root == "host":
        ops += _host_root(spec, host, s)
    elif spec.overlay_dir is not None:
        upper, work = f"{spec.overlay_dir}/upper", f"{spec.overlay_dir}/work"
        ops += _overlay_dirs(spec.overlay_dir, upper, work)
        ops.append(_overlay(s, MS_NOSUID, spec.root, upper, work))
    else:
        root_ops = _directory_root(spec, host, s, inner)
        bound_read_only = isinstance(root_ops[0], Bind)
        ops += root_ops
    ops += inner
    if spec.layers and spec.resolv_conf is not None:
        # Into the unit's own upper layer (overlayfs copies up; the shared layers are lower
        # layers, never written), after every mount so the path cannot be walked onto one
        # (/proc, /run, a unit bind: RESOLVE_NO_XDEV), before the root turns read-only.
        ops.append(WriteInRoot(s, "/etc/resolv.conf", spec.resolv_conf))
    ops += _last_remount(spec, s, keep, bound_read_only)
    ops.append(PivotRoot(s))
    return ops


def _last_remount(spec: RootSpec, s: str, keep: int, bound_read_only: bool) -> list[Op]:
    """The root's own flags once everything is mounted in it, if they change then."""
    if spec.layers:
        if spec.overlay_dir is None:  # read-only: the tmpfs upper holds mount points only
            return [RemountRoot(s, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID)]
        return []
    if spec.overlay_dir is not None or _snapshot_etc(spec):
        return []  # the writable layer; the skeleton was bound read-only first (_skeleton_root)
    if spec.root == "host" and spec.read_only:
        return [RemountRoot(s, MS_REMOUNT | MS_RDONLY | NOSUID_NODEV)]
    if spec.read_only:
        # A root directory bound read-only (`_directory_root`) stays so: again here was one
        # more mount call, and mount calls queue on one lock across every mount namespace of
        # the host (a launch storm's). Its private overlay turns read-only here.
        return [] if bound_read_only else [RemountRoot(s, MS_BIND | MS_REMOUNT | MS_RDONLY | keep)]
    if spec.root != "host":  # bound read-only while the plan ran: the service may write
        return [RemountRoot(s, MS_BIND | MS_REMOUNT | keep)]
    return []


def _image_root(spec: RootSpec, s: str) -> list[Op]:
    """An image's root: its layers as overlay lower layers, which overlayfs never writes (the
    layer store is shared by every unit on the image). A writable root gets the unit's own
    persistent upper layer; a read-only one a small tmpfs upper, in this mount namespace alone,
    that holds only the mount points the image lacks, and the root is then made read-only."""
    if spec.overlay_dir is not None:
        upper, work = f"{spec.overlay_dir}/upper", f"{spec.overlay_dir}/work"
        return [
            *_overlay_dirs(spec.overlay_dir, upper, work),
            _overlay(s, MS_NOSUID, spec.layers, upper, work),
        ]
    upper, work = s + ROOT_UPPER, s + ROOT_WORK
    return [
        Mount("tmpfs", s, "tmpfs", NOSUID_NODEV, f"mode=0700,size={ROOT_UPPER_SIZE}"),
        Mkdir(upper, 0o755),
        Mkdir(work, 0o700),
        _overlay(s, MS_NOSUID, spec.layers, upper, work),
    ]


def _overlay_dirs(overlay_dir: str, upper: str, work: str) -> list[Op]:
    # Modes: the unit's directory and the work dirs are the daemon's (0700); an upper directory
    # gives the merged root (or /usr) its mode, so it must be 0755 for non-root services. The
    # daemon's data_dir (0700) is what keeps host users away from what the sandbox writes in
    # the upper layer, setuid copies included (daemondirs.py).
    return [Mkdir(overlay_dir, 0o700, parents=True), Mkdir(upper, 0o755), Mkdir(work, 0o700)]


def _host_root(spec: RootSpec, host: HostLayout, s: str) -> list[Op]:
    if _snapshot_etc(spec):
        return _skeleton_root(spec, host, s)
    ops: list[Op] = [Mount("tmpfs", s, "tmpfs", NOSUID_NODEV, "mode=0755")]
    overlay = spec.overlay_dir
    if overlay is not None:
        ops += _overlay_dirs(overlay, f"{overlay}/upper", f"{overlay}/work")
    for path in HOST_DIRS:
        found = host.get(path)
        if found is None:
            continue
        if found.kind == "link":
            ops.append(Symlink(found.link, s + path))
        elif found.kind == "dir" and overlay is not None:
            upper, work = f"{overlay}/upper{path}", f"{overlay}/work{path}"
            ops += [Mkdir(upper, 0o755), Mkdir(work, 0o700), Mkdir(s + path)]
            ops.append(_overlay(s + path, MS_NODEV, path, upper, work))
        elif found.kind == "dir":
            ops.append(_bind(host, path, s + path, True, flags=MS_NODEV))
    ops += _etc(spec, host, s)
    ops += [WriteFile(f"{s}/etc/{name}", data) for name, data in own_etc_files(spec.hostname)]
    return ops


def _skeleton_root(spec: RootSpec, host: HostLayout, s: str) -> list[Op]:
    """A read-only host root as one read-only bind of the shared root skeleton (etcsnap.py,
    `root_skeleton_entries`): its mount points, the system trees' symlinks and the /etc
    snapshot are made once for every such sandbox, so a sandbox has no root tmpfs of its own
    (a superblock, a shrinker every memory cgroup on the host keeps a slot for, and an inode
    and dentry per entry) and PID 1 makes no directory or link in it. Bound read-only from
    the first operation on: nothing the plan does writes into what the neighbours share, and
    no RemountRoot follows (without MS_BIND it would remount the state dir's filesystem).
    The host's system trees and /etc directories are bound over their placeholders, the
    unit's own hostname and hosts in `_kernel_filesystems` (`_own_etc_ops`)."""
    assert spec.etc_snapshot is not None
    ops: list[Op] = [_bind(host, spec.etc_snapshot, s, True, flags=NOSUID_NODEV)]
    for path in HOST_DIRS:
        found = host.get(path)
        if found is not None and found.kind == "dir":
            ops.append(_bind(host, path, s + path, True, flags=MS_NODEV))
    return ops + _etc(spec, host, s)


def _own_etc_ops(spec: RootSpec, s: str) -> list[Op]:
    """The unit's own hostname and hosts over the skeleton's placeholders: written into the
    sandbox's /dev tmpfs, in the directory devpts is mounted on next (so no process in the
    sandbox reaches them there), and bound read-only (the /dev tmpfs is writable), keeping
    /dev's nosuid, nodev and noexec."""
    ops: list[Op] = []
    for name, data in own_etc_files(spec.hostname):
        own_file = f"{s}{OWN_ETC_DIR}/{OWN_ETC_PREFIX}{name}"
        remount = MS_BIND | MS_REMOUNT | MS_RDONLY | NOSUID_NODEV_NOEXEC
        ops += [
            WriteFile(own_file, data),
            Bind(own_file, f"{s}/etc/{name}", False, remount, own=True),
        ]
    return ops


def own_etc_files(hostname: str) -> tuple[tuple[str, bytes], ...]:
    """A host root's own /etc/hostname and /etc/hosts (the names in OWN_ETC), their content:
    the only part of any root plan that depends on the hostname (plancache.py relies on it)."""
    hosts = f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{hostname}\n"
    return (("hostname", hostname.encode() + b"\n"), ("hosts", hosts.encode()))


def shares_etc(spec: RootSpec) -> bool:
    """Whether the sandbox's /etc is a shared read-only snapshot (`etc_snapshot_entries`):
    a host root that ends read-only. A writable root keeps copies, its own to change."""
    return spec.root == "host" and not spec.layers and spec.read_only and spec.overlay_dir is None


def _snapshot_etc(spec: RootSpec) -> bool:
    return spec.etc_snapshot is not None and shares_etc(spec)


# A snapshot entry: (name in /etc, kind, payload). "file": a copy of the host's file (or the
# unit's resolv.conf), payload its content; "link": a symlink, payload its target; "dir" and
# "empty": a placeholder directory or empty file, where PID 1 binds the host's directory or
# file (too large to copy) or the sandbox's own file (OWN_ETC).
SnapshotEntry = tuple[str, str, bytes]
OWN_ETC = ("hostname", "hosts")  # per unit: never in a snapshot, bound over its placeholder
# Where PID 1 writes them first: in the sandbox's /dev tmpfs, under the mount point of
# /dev/pts, which covers them before the service runs (_kernel_filesystems).
OWN_ETC_DIR, OWN_ETC_PREFIX = "/dev/pts", ".sandboxd-etc-"
# The skeleton's empty directory every masked directory is a bind of: under /run's mount
# point, which the sandbox's /run (or a [[mount]] there) covers after the masks are bound, so
# no process in the sandbox reaches it there; read-only with the skeleton's bind (and locked
# so in a user namespace), as the masking tmpfs was.
MASK_DIR = "/run/.sandboxd-masked"


def etc_snapshot_entries(spec: RootSpec, host: HostLayout) -> tuple[SnapshotEntry, ...]:
    """What a read-only host root's /etc holds, as one snapshot directory (etcsnap.py) that
    every sandbox with the same content binds: the curated host files that were read (up to
    1 MiB) as copies, their symlinks, a bridge unit's resolv.conf, and placeholders for the
    host directories, the unread larger files and the unit's own hostname and hosts."""
    out: list[SnapshotEntry] = []
    for name in ETC_ENTRIES:
        found = host.get(f"/etc/{name}")
        if name == "resolv.conf" and spec.resolv_conf is not None:
            out.append((name, "file", spec.resolv_conf))
        elif found is None:
            continue
        elif found.kind == "link":
            out.append((name, "link", found.link.encode()))
        elif found.kind == "file":
            out.append(
                (name, "file", found.data) if found.data is not None else (name, "empty", b"")
            )
        elif found.kind == "dir":
            out.append((name, "dir", b""))
    return tuple(out) + tuple((name, "empty", b"") for name in OWN_ETC)


def root_skeleton_entries(spec: RootSpec, host: HostLayout) -> tuple[SnapshotEntry, ...]:
    """What a read-only host root is, as one directory every sandbox with the same content
    binds read-only as its root (etcsnap.py; `_skeleton_root`): the host's system trees'
    symlinks and placeholders for the directories bound over them, the /etc snapshot
    (`etc_snapshot_entries`) under etc/, and every other mount point the plan makes in the
    root ([[mount]] targets and their parents included), parents first. Names are relative
    to the root."""
    out: list[SnapshotEntry] = []
    for path in HOST_DIRS:
        found = host.get(path)
        if found is not None and found.kind in ("dir", "link"):
            out.append((path[1:], found.kind, found.link.encode()))
    out.append(("etc", "dir", b""))
    out += [(f"etc/{name}", kind, data) for name, kind, data in etc_snapshot_entries(spec, host)]
    have = {name for name, _, _ in out}
    dirs = {""} | {name for name, kind, _ in out if kind == "dir"}
    s = staging_dir(spec, host)
    for path, is_dir in sorted(_made_in_root(_inner_ops(spec, host, s), s).items()):
        name = path.strip("/")  # "": a [[mount]] on a top directory names the root itself
        # Only under a directory of the skeleton: a [[mount]] target through one of its links
        # (/bin/x, /bin -> usr/bin) would make the write fail, and with it every unit's
        # skeleton for a while (etcsnap.ensure); left out, that unit's launch is refused, as
        # any mount target through a symlink is.
        if name and name not in have and os.path.dirname(name) in dirs:
            out.append((name, "dir" if is_dir else "empty", b""))
            have.add(name)
            dirs.update([name] if is_dir else [])
    return (*out, (MASK_DIR[1:], "dir", b""))


def _etc(spec: RootSpec, host: HostLayout, s: str) -> list[Op]:
    """A host root's curated /etc (hostname and hosts are the unit's own: `_host_root`)."""
    if _snapshot_etc(spec):
        # The shared snapshot is the root skeleton's etc/, bound with it (`_skeleton_root`):
        # its copies are one set of pages in the host's page cache, whatever the number of
        # sandboxes, instead of a page of tmpfs per file in each sandbox. What the snapshot
        # cannot hold (the host's directories, a file too large to have been read) is bound
        # over its placeholder.
        ops: list[Op] = []
        for name, kind, _ in etc_snapshot_entries(spec, host):
            if kind in ("dir", "empty") and name not in OWN_ETC:
                ops.append(_bind(host, f"/etc/{name}", f"{s}/etc/{name}", True, flags=NOSUID_NODEV))
        return ops
    ops = [Mkdir(s + "/etc")]
    # Without a snapshot (a plan made with no state directory for one), a root that ends
    # read-only gets the host's larger files themselves, bound read-only: every sandbox then
    # shares the host's page cache for them instead of holding its own copy in its tmpfs, and
    # no sandbox can write what another one reads. A file of one page or less is copied: its
    # page costs less than a bind's two mount calls, which the kernel serializes across every
    # mount namespace (a launch storm queues on them). A writable root keeps copies, its own
    # to change.
    shared_etc = spec.read_only and spec.overlay_dir is None
    for name in ETC_ENTRIES:
        path = f"/etc/{name}"
        found = host.get(path)
        if name == "resolv.conf" and spec.resolv_conf is not None:
            # Written, never bound or linked: the sandbox's copy is its own (a host file
            # that is a symlink into /run would point at nothing in here anyway).
            ops.append(WriteFile(s + path, spec.resolv_conf))
            continue
        if found is None:
            continue
        if found.kind == "link":
            ops.append(Symlink(found.link, s + path))
        elif found.kind == "file" and shared_etc and (found.data is None or len(found.data) > PAGE):
            ops.append(_bind(host, path, s + path, True, flags=NOSUID_NODEV))
        elif found.data is not None:
            # Copied into the writable root: the sandbox's changes stay its own.
            ops.append(WriteFile(s + path, found.data))
        elif found.kind == "dir":
            ops.append(_bind(host, path, s + path, True, flags=NOSUID_NODEV))
    return ops


def _dev_dirs(spec: RootSpec, s: str, check: bool) -> tuple[int, list[Op], list[Op]]:
    """/tmp and /run as directories of /dev's tmpfs (DEV_SIZE), bound onto their mount points,
    unless a unit mount takes the path: the bytes they add to that tmpfs, the directories to
    make there and the binds. The binds drop /dev's noexec (a bind starts with its source
    mount's flags), so /tmp and /run stay nosuid and nodev and allow exec, as their own tmpfs
    did."""
    targets = {m.target for m in spec.mounts}
    size, made, bound = 0, list[Op](), list[Op]()
    for path, mode, room in (("/tmp", 0o1777, spec.tmp_size), ("/run", 0o755, spec.run_size)):
        if path in targets:
            continue
        own = f"{s}{OWN_DIRS_PREFIX}{path[1:]}"
        size += room
        made.append(Mkdir(own, mode))  # exactly `mode` (syscalls.mkdir: whatever the umask)
        if check:  # else the bind makes its mount point itself
            bound.append(Mkdir(s + path, check=check))
        bound.append(Bind(own, s + path, True, MS_BIND | MS_REMOUNT | NOSUID_NODEV, own=True))
    return size, made, bound


def _kernel_filesystems(spec: RootSpec, host: HostLayout, s: str, check: bool) -> list[Op]:
    dirs_size, dirs_made, dirs_bound = _dev_dirs(spec, s, check)
    ops: list[Op] = [
        Mkdir(s + "/proc", check=check),
        Mount("proc", s + "/proc", "proc", NOSUID_NODEV_NOEXEC),
        Mkdir(s + "/dev", check=check),
        Mount("tmpfs", s + "/dev", "tmpfs", NOSUID_NODEV_NOEXEC,
              f"mode=0755,size={DEV_SIZE + dirs_size}"),
    ]  # fmt: skip
    # Devices are bound from the host's /dev (not mknod'ed) so /dev itself can be nodev, and
    # the same plan works inside a user namespace.
    ops += [_bind(host, f"/dev/{d}", f"{s}/dev/{d}", False) for d in DEVICES]
    ops.append(Mkdir(s + "/dev/pts"))
    if _snapshot_etc(spec):
        ops += _own_etc_ops(spec, s)
    ops += dirs_made
    ops.append(Mkdir(s + "/dev/shm", 0o1777))  # exactly 1777 (syscalls.mkdir: whatever the umask)
    ops += [Symlink(target, f"{s}/dev/{name}") for target, name in DEV_LINKS]
    for path, read_only in spec.devices:
        ops += [Mkdir(os.path.dirname(s + path), parents=True)]
        ops.append(_bind(host, path, s + path, read_only, flags=MS_NOSUID | MS_NOEXEC))
    ops.append(Mkdir(s + "/sys", check=check))
    if spec.sysfs:
        ops.append(Mount("sysfs", s + "/sys", "sysfs", MS_RDONLY | NOSUID_NODEV_NOEXEC))
    # Every masked directory after the first gets the first one's tmpfs; with the shared
    # skeleton as the root, every one is a bind of its empty directory (`MASK_DIR`), so the
    # sandbox mounts no filesystem for them at all.
    first_dir = s + MASK_DIR if _snapshot_etc(spec) else ""
    for path in MASKED:
        found = host.get(path)
        if found and (spec.sysfs or not path.startswith("/sys")):
            is_dir = found.kind == "dir"
            ops.append(Mask(s + path, is_dir, first_dir if is_dir else ""))
            first_dir = first_dir or (s + path if is_dir else "")
    for path in READ_ONLY:
        found = host.get(path)
        if found:
            flags = MS_BIND | MS_REMOUNT | MS_RDONLY | NOSUID_NODEV_NOEXEC
            ops.append(ReadOnly(s + path, flags | (found.flags & PRESERVED_MOUNT_FLAGS)))
    # /run after the masks: it covers the skeleton's MASK_DIR they are binds of. devpts last:
    # it covers what was made under its mount point (own /etc files, /tmp's and /run's
    # directories), reachable from then on only through their binds.
    ops += dirs_bound
    ops.append(Mount("devpts", s + "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                     "newinstance,ptmxmode=0666,mode=0620"))  # fmt: skip
    return ops


def _unit_mounts(spec: RootSpec, host: HostLayout, s: str, untrusted: bool) -> list[Op]:
    ops: list[Op] = []
    # Parents first, so /srv/data is not hidden under a later /srv.
    for m in sorted(spec.mounts, key=lambda m: m.target.count("/")):
        target = s + m.target
        if m.source is None:
            data = f"mode={m.mode:o}" + (f",size={m.size}" if m.size else "")
            ops += [
                Mkdir(target, parents=True, check=True),
                Mount("tmpfs", target, "tmpfs", NOSUID_NODEV, data),
            ]
        else:
            ops.append(Mkdir(os.path.dirname(target), parents=True, check=True))
            ops.append(_bind(host, m.source, target, m.read_only, flags=MS_NOSUID, check=True))
    return ops
