"""The sandbox's root: a mount plan computed in the daemon, applied by PID 1 before exec.

`plan_root()` is pure (host facts come in a `HostLayout`, probed by hostlayout.py), so unit
tests assert the whole plan; `apply()` runs it through a `Syscalls`. Everything happens in
PID 1's private mount namespace, which dies with the sandbox: a failed launch leaves no mount
behind on the host.

Fail closed: every mount, bind and read-only remount either succeeds or aborts the launch.
Threats this module answers:
- mount propagation: our mounts must not appear on the host, nor host mounts in here, so "/"
  is made recursively private first;
- a malicious rootfs: a symlink inside a root directory (e.g. DIR/tmp -> /etc) would point our
  mounts and writes at host paths, so every target must resolve to itself;
- a redirected source: a sandbox that can write a host directory can turn `shared/app` into a
  symlink to /etc, and a neighbour binding `shared/app/ssl` would get the host's /etc/ssl. So
  every host path the plan mounts (bind sources, the root directory, overlay layers) is opened
  by PID 1 with no symlink followed in any component (openat2 RESOLVE_NO_SYMLINKS), and that fd
  is what gets mounted, through /proc/self/fd/N: a path swapped after the open changes nothing;
- a movable root directory: the root is bound (by fd) onto a fixed, root-owned staging
  directory (/mnt, ...) and built there, so no later step goes through its host path again;
- host secrets: root = "host" shows only /usr, /bin, /sbin, /lib* and a curated /etc, never
  /etc/shadow, /root, /home, /var, /run or other sandboxes' state;
- kernel interfaces: /proc and /sys paths that leak host memory or flip host switches are
  masked or read-only (the list is runc's);
- bind remounts keep the source's nosuid/nodev/noexec: a plain MS_RDONLY remount would drop
  them and turn a nosuid source into a setuid entry point.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass

from supervisor.linux.syscalls import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    PRESERVED_MOUNT_FLAGS,
    Syscalls,
)
from supervisor.sandbox.hostlayout import (
    DEVICES,
    ETC_ENTRIES,
    HOST_DIRS,
    MASKED,
    READ_ONLY,
    STAGING_CANDIDATES,
    HostLayout,
)
from supervisor.sandbox.protocol import StageFailure

DEV_LINKS = (
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
    ("pts/ptmx", "ptmx"),
)
INIT_PATH = "/dev/init"  # where init = true binds tini: outside any unit mount
_NOSUID_NODEV = MS_NOSUID | MS_NODEV
_NOSUID_NODEV_NOEXEC = MS_NOSUID | MS_NODEV | MS_NOEXEC


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
    """

    source: str
    target: str
    is_dir: bool
    remount: int | None
    check: bool = False


@dataclass(frozen=True)
class Symlink:
    target: str
    path: str


@dataclass(frozen=True)
class WriteFile:
    path: str
    data: bytes


@dataclass(frozen=True)
class Mask:
    """Hide a path: /dev/null over a file, an empty read-only tmpfs over a directory."""

    path: str
    is_dir: bool


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


Op = Mkdir | Mount | Bind | Symlink | WriteFile | Mask | ReadOnly | RemountRoot | PivotRoot


@dataclass(frozen=True)
class UnitMount:
    """A unit mount or a daemon-supplied bind, flattened from the schema."""

    target: str
    source: str | None = None  # None: tmpfs
    read_only: bool = True
    size: int | None = None
    mode: int = 0o1777


@dataclass(frozen=True)
class RootSpec:
    root: str  # "host" or a directory
    hostname: str
    read_only: bool = True
    overlay_dir: str | None = None  # set: copy-on-write layer with upper/work under it
    mounts: tuple[UnitMount, ...] = ()
    devices: tuple[tuple[str, bool], ...] = ()  # (path, read_only)
    init_binary: str | None = None
    sysfs: bool = True
    tmp_size: int = 64 << 20  # bytes, for /tmp and /run: never unbounded (half of the host RAM)
    run_size: int = 16 << 20


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _overlay(target: str, flags: int, lower: str, upper: str, work: str) -> Mount:
    # The layers travel as /proc/self/fd/N, never as paths in the options: no symlink in them
    # is followed, and a "," or ":" in a path cannot be misparsed by overlayfs.
    layers = (("lowerdir", lower), ("upperdir", upper), ("workdir", work))
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


def plan_root(spec: RootSpec, host: HostLayout) -> list[Op]:
    """Every operation, in order, that turns the host's mount tree into the sandbox's root."""
    s = staging_dir(spec, host)
    ops: list[Op] = [Mount(None, "/", None, MS_REC | MS_PRIVATE)]
    writable = spec.overlay_dir is not None or not spec.read_only
    untrusted = spec.root != "host"  # a directory's content may be hostile
    if spec.root == "host":
        ops += _host_root(spec, host, s)
    elif spec.overlay_dir is not None:
        upper, work = f"{spec.overlay_dir}/upper", f"{spec.overlay_dir}/work"
        ops += _overlay_dirs(spec.overlay_dir, upper, work)
        ops.append(_overlay(s, MS_NOSUID, spec.root, upper, work))
    else:
        ops.append(Bind(spec.root, s, True, None))
    ops += _kernel_filesystems(spec, host, s, untrusted)
    ops += _unit_mounts(spec, host, s, untrusted)
    if spec.init_binary:
        ops.append(_bind(host, spec.init_binary, s + INIT_PATH, True, flags=MS_NOSUID | MS_NODEV))
    if not writable:
        if spec.root == "host":
            ops.append(RemountRoot(s, MS_REMOUNT | MS_RDONLY | _NOSUID_NODEV))
        else:
            found = host.get(spec.root)
            keep = found.flags & PRESERVED_MOUNT_FLAGS if found else 0
            ops.append(RemountRoot(s, MS_BIND | MS_REMOUNT | MS_RDONLY | keep))
    ops.append(PivotRoot(s))
    return ops


def _overlay_dirs(overlay_dir: str, upper: str, work: str) -> list[Op]:
    # Modes: the unit's directory and the work dirs are the daemon's (0700); an upper directory
    # gives the merged root (or /usr) its mode, so it must be 0755 for non-root services. The
    # daemon's data_dir (0700) is what keeps host users away from what the sandbox writes in
    # the upper layer, setuid copies included (daemondirs.py).
    return [Mkdir(overlay_dir, 0o700, parents=True), Mkdir(upper, 0o755), Mkdir(work, 0o700)]


def _host_root(spec: RootSpec, host: HostLayout, s: str) -> list[Op]:
    ops: list[Op] = [Mount("tmpfs", s, "tmpfs", _NOSUID_NODEV, "mode=0755")]
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
    ops.append(Mkdir(s + "/etc"))
    for name in ETC_ENTRIES:
        path = f"/etc/{name}"
        found = host.get(path)
        if found is None:
            continue
        if found.kind == "link":
            ops.append(Symlink(found.link, s + path))
        elif found.data is not None:
            # Copied, not bound: a snapshot in our tmpfs costs one write instead of two mounts
            # and leaves the host file out of reach even if a remount failed open.
            ops.append(WriteFile(s + path, found.data))
        elif found.kind == "dir":
            ops.append(_bind(host, path, s + path, True, flags=_NOSUID_NODEV))
    hosts = f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{spec.hostname}\n"
    ops.append(WriteFile(s + "/etc/hostname", spec.hostname.encode() + b"\n"))
    ops.append(WriteFile(s + "/etc/hosts", hosts.encode()))
    return ops


def _kernel_filesystems(spec: RootSpec, host: HostLayout, s: str, check: bool) -> list[Op]:
    targets = {m.target for m in spec.mounts}
    ops: list[Op] = [
        Mkdir(s + "/proc", check=check),
        Mount("proc", s + "/proc", "proc", _NOSUID_NODEV_NOEXEC),
        Mkdir(s + "/dev", check=check),
        Mount("tmpfs", s + "/dev", "tmpfs", _NOSUID_NODEV_NOEXEC, "mode=0755,size=65536"),
    ]
    # Devices are bound from the host's /dev (not mknod'ed) so /dev itself can be nodev, and
    # the same plan works inside a user namespace.
    ops += [_bind(host, f"/dev/{d}", f"{s}/dev/{d}", False) for d in DEVICES]
    ops += [
        Mkdir(s + "/dev/pts"),
        Mount("devpts", s + "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620"),
        Mkdir(s + "/dev/shm", 0o1777),
        Mount("shm", s + "/dev/shm", "tmpfs", _NOSUID_NODEV_NOEXEC, "mode=1777,size=67108864"),
    ]  # fmt: skip
    ops += [Symlink(target, f"{s}/dev/{name}") for target, name in DEV_LINKS]
    for path, read_only in spec.devices:
        ops += [Mkdir(os.path.dirname(s + path), parents=True)]
        ops.append(_bind(host, path, s + path, read_only, flags=MS_NOSUID | MS_NOEXEC))
    ops.append(Mkdir(s + "/sys", check=check))
    if spec.sysfs:
        ops.append(Mount("sysfs", s + "/sys", "sysfs", MS_RDONLY | _NOSUID_NODEV_NOEXEC))
    for path in MASKED:
        found = host.get(path)
        if found and (spec.sysfs or not path.startswith("/sys")):
            ops.append(Mask(s + path, found.kind == "dir"))
    for path in READ_ONLY:
        found = host.get(path)
        if found:
            flags = MS_BIND | MS_REMOUNT | MS_RDONLY | _NOSUID_NODEV_NOEXEC
            ops.append(ReadOnly(s + path, flags | (found.flags & PRESERVED_MOUNT_FLAGS)))
    for path, mode, size in (("/tmp", "1777", spec.tmp_size), ("/run", "0755", spec.run_size)):
        if path not in targets:
            ops.append(Mkdir(s + path, check=check))
            ops.append(Mount("tmpfs", s + path, "tmpfs", _NOSUID_NODEV, f"mode={mode},size={size}"))
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
                Mount("tmpfs", target, "tmpfs", _NOSUID_NODEV, data),
            ]
        else:
            ops.append(Mkdir(os.path.dirname(target), parents=True, check=True))
            ops.append(_bind(host, m.source, target, m.read_only, flags=MS_NOSUID, check=True))
    return ops


def _check_target(sys: Syscalls, path: str) -> None:
    if sys.resolve(path) != path:
        raise StageFailure(
            "rootfs", 40, f"mount target {path} resolves through a symlink; refusing to follow it"
        )


def fd_path(fd: int) -> str:
    # mount(2) follows this magic link straight to the file the fd holds (runc's technique):
    # the path it was opened by is never looked up again, so swapping it afterwards is useless.
    return f"/proc/self/fd/{fd}"


def _open_source(sys: Syscalls, what: str, path: str, directory: bool = False) -> int:
    try:
        return sys.open_path(path, directory)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise StageFailure(
                "rootfs",
                errno.ELOOP,
                f"{what} {path} has a symlink in its path; sandboxd never follows one there "
                "(name the real path)",
            ) from None
        raise StageFailure.from_oserror("rootfs", f"open {what} {path}", err) from None


def _mount_layers(sys: Syscalls, op: Mount) -> None:
    fds: list[int] = []
    try:
        for option, path in op.layers:
            fds.append(_open_source(sys, f"{op.fstype} {option}", path, directory=True))
        names = [option for option, _ in op.layers]
        options = [f"{name}={fd_path(fd)}" for name, fd in zip(names, fds, strict=True)]
        data = ",".join(options + ([op.data] if op.data else []))
        sys.mount(op.source, op.target, op.fstype, op.flags, data)
    finally:
        for fd in fds:
            sys.close(fd)


def _bind_fd(sys: Syscalls, source: str, target: str) -> None:
    fd = _open_source(sys, "bind source", source)
    try:
        sys.mount(fd_path(fd), target, None, MS_BIND, None)
    finally:
        sys.close(fd)


def apply_op(sys: Syscalls, op: Op) -> None:  # noqa: PLR0912  (one case per Op type)
    match op:
        case Mkdir(path, mode, parents, check):
            sys.mkdir(path, mode, parents)
            if check:
                _check_target(sys, path)
        case Mount(source, target, fstype, flags, data, layers):
            if layers:
                _mount_layers(sys, op)
            else:
                sys.mount(source, target, fstype, flags, data)
        case Bind(source, target, is_dir, remount, check):
            if is_dir:
                sys.mkdir(target, 0o755)
            elif sys.kind(target) is None:
                sys.touch(target)
            if check:
                _check_target(sys, target)
            _bind_fd(sys, source, target)
            if remount is not None:
                sys.mount(None, target, None, remount, None)
        case Symlink(target, path):
            sys.symlink(target, path)
        case WriteFile(path, data):
            sys.write_file(path, data)
        case Mask(path, is_dir):
            if is_dir:
                sys.mount("tmpfs", path, "tmpfs", MS_RDONLY | _NOSUID_NODEV_NOEXEC, "size=0")
            else:
                _bind_fd(sys, "/dev/null", path)
        case ReadOnly(path, remount):
            sys.mount(path, path, None, MS_BIND, None)
            sys.mount(None, path, None, remount, None)
        case RemountRoot(path, flags):
            sys.mount(None, path, None, flags, None)
        case PivotRoot(new_root):
            # pivot_root(".", ".") stacks the old root on top of the new one; unmounting "."
            # then detaches the whole host tree from this namespace (no chroot escape left).
            sys.chdir(new_root)
            sys.pivot_root(".", ".")
            sys.umount2(".", MNT_DETACH)
            sys.chdir("/")


def describe(op: Op) -> str:
    match op:
        case Bind(source, target, _, remount, _):
            ro = " read-only" if remount is not None and remount & MS_RDONLY else ""
            return f"bind {source} on {target}{ro}"
        case Mount(source, target, fstype, _, _, layers):
            over = "".join(f" {option}={path}" for option, path in layers)
            return f"mount {fstype or source}{over} on {target}"
        case _:
            return f"{type(op).__name__.lower()} {next(iter(vars(op).values()))}"


def apply(sys: Syscalls, ops: Iterable[Op]) -> None:
    for op in ops:
        try:
            apply_op(sys, op)
        except OSError as err:
            raise StageFailure.from_oserror("rootfs", describe(op), err) from None
