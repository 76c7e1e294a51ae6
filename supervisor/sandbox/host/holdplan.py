"""A root plan for a sandbox with its own user namespace: host sources held by the launcher.

PID 1 runs as the mapped root of the unit's user namespace (host uid BASE), which can neither
enter the daemon's 0700 directories (the overlay and notify socket directories, the image
layer store) nor make an idmapped mount (that needs CAP_SYS_ADMIN in the filesystem's own user
namespace, the host's). So `hold_sources` turns the plan `rootplan.plan_root` made into one
where every host path it mounts is a `Hold`: the launcher, still host root, mounts it (a
detached copy, idmapped where wanted) in its own mount namespace under `<staging>/held/<i>`
(child/holding.py), and PID 1 binds it from there like any other source. The root itself is
built at `<staging>/root` instead of `<staging>`, which holds the holding tmpfs.

What is idmapped (the unit's map on the mount: a file the host's uid 0 owns is uid 0 inside,
an image file of uid 33 is 33 inside), and only that:
- the host root's system trees (HOST_DIRS: /usr, /bin, /lib...), read-only: programs and
  libraries look root-owned, as they are; these trees hold no secrets (the host's /etc is
  never idmapped: /etc/ssl/private would become readable to the sandbox's root);
- an image's layers and a root directory when read-only or the lower layer of an overlay:
  the sandbox's own system tree, with the owners it was built with;
- a read-only host root's /etc snapshot (etcsnap.py): the daemon's copies of the curated
  files, owned by the host's root, so root-owned inside as the copies PID 1 used to write;
- a [[mount]] with `idmap = "host"`, the operator's choice (weaker: root inside writes and
  reads there as the host's root).
Everything else is held as it is (but the host's device nodes and /etc entries, which any uid
may reach, are bound by PID 1 itself as without a user namespace): a writable bind or an
overlay's upper layer gets the unit's mapped ids on disk (BASE + uid), and a read-only bind of
a host file keeps the host's permission checks, so root inside is "other" for a root-only file
there.
"""

from __future__ import annotations

from dataclasses import replace

from supervisor.linux.syscalls import (
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
)
from supervisor.sandbox.host.hostlayout import DEVICES, ETC_ENTRIES, HOST_DIRS
from supervisor.sandbox.wire.mounts import (
    Bind,
    Hold,
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

ROOT, HELD = "/root", "/held"  # under the staging directory
_ATTRS = (
    (MS_RDONLY, MOUNT_ATTR_RDONLY),
    (MS_NOSUID, MOUNT_ATTR_NOSUID),
    (MS_NODEV, MOUNT_ATTR_NODEV),
    (MS_NOEXEC, MOUNT_ATTR_NOEXEC),
)


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def mount_attrs(flags: int) -> int:
    """The MOUNT_ATTR_* for a remount's MS_* flags (the ones a bind may add)."""
    return sum(attr for flag, attr in _ATTRS if flags & flag)


def idmapped_sources(spec: RootSpec) -> set[str]:
    """The sandbox's own system trees, mounted through the unit's id map (see the module
    docstring); a [[mount]] is idmapped by its `idmap`, whatever its source."""
    paths: set[str] = set()
    if spec.layers:
        paths.update(spec.layers)
    elif spec.root == "host":
        paths.update(HOST_DIRS)
        if spec.etc_snapshot is not None:
            # The daemon's copies of the curated, secret-free files, owned by the host's
            # root as on the host; read-only, so root inside cannot write them through the map.
            paths.add(spec.etc_snapshot)
    elif spec.read_only or spec.overlay_dir is not None:
        # A writable one without overlay is the service's to write, with its mapped ids.
        paths.add(spec.root)
    return paths


class _Holder:
    def __init__(self, spec: RootSpec, s: str) -> None:
        self.s, self.root, self.held = s, s + ROOT, s + HELD
        self.idmapped = idmapped_sources(spec)
        self.idmapped_targets = {self.root + m.target for m in spec.mounts if m.idmap}
        # System paths every uid may reach, bound as they are: PID 1 binds them itself, as
        # without a user namespace (a hold costs the launcher five syscalls).
        self.own = {f"/dev/{d}" for d in DEVICES} | {f"/etc/{e}" for e in ETC_ENTRIES}
        self.own |= {path for path, _ in spec.devices}
        self.overlay = spec.overlay_dir
        # A root directory the service may write (no overlay): PID 1 binds it read-only while
        # it builds the root and writable at the end, so the held copy must stay unlocked.
        writable = spec.root != "host" and not spec.layers and not spec.read_only
        self.writable_root = spec.root if writable and self.overlay is None else None
        self.owned: list[tuple[str, int]] = []
        self.holds: list[Hold] = []
        self._index: dict[Hold, int] = {}

    def inside(self, path: str) -> str:
        """A path of the staging root, moved to where the root is built now."""
        return self.root + path[len(self.s) :] if _under(path, self.s) else path

    def hold(self, source: str, is_dir: bool, attrs: int, idmap: bool) -> str:
        """Where PID 1 finds `source`, held (once per source, id map and attributes)."""
        return self._held_at(Hold(source, is_dir, idmap, attrs))

    def _held_at(self, hold: Hold) -> str:
        if hold not in self._index:
            self._index[hold] = len(self.holds)
            self.holds.append(hold)
        return f"{self.held}/{self._index[hold]}"

    def layer(self, path: str) -> str:
        if self.overlay is not None and _under(path, self.overlay):
            # The unit's overlay directory, whole (overlayfs wants upper and work on one
            # mount), owned by its mapped root: what the service writes is BASE + uid on disk.
            held = self._held_at(Hold(self.overlay, True, False, 0, tuple(self.owned)))
            return held + path[len(self.overlay) :]
        if _under(path, self.s):
            return self.inside(path)
        return self.hold(path, True, MOUNT_ATTR_RDONLY, path in self.idmapped)

    def op(self, op: Op) -> Op | None:
        match op:
            case Mkdir(path, _, _, _):
                if self.overlay is not None and _under(path, self.overlay):
                    return None  # made by the launcher (Hold.owned)
                return replace(op, path=self.inside(path))
            case Mount(_, target, _, _, _, layers):
                moved = tuple((option, self.layer(path)) for option, path in layers)
                return replace(op, target=self.inside(target), layers=moved)
            case Bind(source, target, is_dir, remount, _):
                target = self.inside(target)
                if _under(source, self.s):  # a file PID 1 wrote into the root (rootplan.OWN_ETC)
                    return replace(op, source=self.inside(source), target=target)
                if source == self.writable_root:
                    held = self.hold(source, is_dir, 0, False)
                    return replace(op, source=held, target=target)
                idmap = source in self.idmapped or target in self.idmapped_targets
                if source in self.own and not idmap:
                    return replace(op, target=target)
                # The attributes are set by the launcher, where the copy PID 1 gets locks them.
                held = self.hold(source, is_dir, mount_attrs(remount or 0), idmap)
                return replace(op, source=held, target=target, remount=None)
            case Symlink(_, path) | WriteFile(path, _):
                return replace(op, path=self.inside(path))
            case WriteInRoot(root, _, _, _):
                return replace(op, root=self.inside(root))
            case Mask(path, _, like):
                return replace(op, path=self.inside(path), like=like and self.inside(like))
            case ReadOnly(path, _) | RemountRoot(path, _):
                return replace(op, path=self.inside(path))
            case PivotRoot(new_root):
                return PivotRoot(self.inside(new_root))
        return op


def hold_sources(ops: list[Op], spec: RootSpec, s: str) -> tuple[list[Op], tuple[Hold, ...]]:
    """`ops` (built at staging directory `s`) for PID 1 in a user namespace, and what the
    launcher holds for them, in order (PID 1 finds hold i at `s`/held/i)."""
    holder = _Holder(spec, s)
    if holder.overlay is not None:
        holder.owned = [
            (op.path, op.mode)
            for op in ops
            if isinstance(op, Mkdir) and _under(op.path, holder.overlay)
        ]
    out = [moved for op in ops if (moved := holder.op(op)) is not None]
    return out, tuple(holder.holds)
