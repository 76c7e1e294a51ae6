"""One read-only /etc per distinct content, shared by every sandbox whose root is the host's.

A read-only host root's /etc is the curated host files (copied), their symlinks, a bridge
unit's resolv.conf and placeholders for what is bound over them (rootplan.etc_snapshot_entries).
Written into each sandbox's root tmpfs, those copies cost every sandbox a page of tmpfs and an
inode per file (about 60 KiB); here they are written once, into `<state_dir>/etc/<digest>`, and
each sandbox binds that directory read-only as its /etc, so all of them read one set of pages
of the host's page cache.

Content-addressed: the name is a digest of the entries, so a host file that changes gives new
sandboxes a new snapshot at their next start (as a copy did), while running ones keep theirs.
A snapshot is made in a temporary directory and renamed into place, so one that exists is
complete. The files are the host root's, 0644 (directories 0755): no sandbox can write them
(each bind is read-only, and locked so in a user namespace; the state directory is the
daemon's, 0700), and they hold nothing secret (the curated list).

Removed once nothing uses it: `sweep` deletes every other snapshot that no mount namespace on
the host has mounted (a running sandbox's /etc, found in /proc/*/mountinfo) and that no plan of
this daemon named in the last `RECENT` seconds (a launch on its way, whose PID 1 has not bound
it yet). It runs when a new snapshot is made and at the first launch of a daemon, and at most
every `SWEEP_EVERY` seconds afterwards while several snapshots exist: reading every mount
namespace's mountinfo costs milliseconds per thousand sandboxes, and only when /etc changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import time

from supervisor.linux import mountinfo
from supervisor.sandbox.host.rootplan import SnapshotEntry

TEMP_PREFIX = ".new-"
RECENT = 300.0  # seconds a snapshot named by a plan is kept even if no sandbox shows it yet
SWEEP_EVERY = 600.0

# entries -> snapshot path, for the launches that follow: the entries' bytes are the host
# layout's cached copies (hostlayout._ETC_CACHE), whose hashes Python keeps, so a lookup costs
# no digest of their content.
_MADE: dict[tuple[SnapshotEntry, ...], str] = {}
_MADE_MAX = 64
_planned: dict[str, float] = {}  # snapshot path -> when a plan last named it (monotonic)
# base directory -> when a snapshot could not be written there: until RETRY_AFTER has passed,
# plans get copies at once instead of trying again (a state dir on a filesystem that refuses a
# symlink, full, or stalled: one failed try, not one per launch on the daemon's loop).
_failed: dict[str, float] = {}
RETRY_AFTER = 600.0
_last_sweep: dict[str, float] = {}  # base directory -> when it was last swept


# Filesystems whose mounts the kernel can idmap, and the first kernel that can (a sandbox with
# its own user namespace sees the snapshot through an idmapped mount: holdplan.py). tmpfs, what
# the state dir (/run/sandboxd) normally is, only since 6.3: on Debian 12's 6.1 a snapshot
# there could not be held, so such a sandbox gets copies, as before snapshots.
IDMAP_SINCE: dict[str, tuple[int, int]] = {
    "ext4": (5, 12),
    "xfs": (5, 12),
    "vfat": (5, 12),
    "btrfs": (5, 15),
    "tmpfs": (6, 3),
}
_idmappable: dict[str, bool] = {}  # base directory -> can_idmap(base), probed once


def can_idmap(base: str) -> bool:
    """Whether a snapshot under `base` can be mounted idmapped on this kernel: its
    filesystem's type (from /proc/self/mountinfo) is one IDMAP_SINCE names, at that version
    or later. Unknown type or version: no (copies are always possible)."""
    if (known := _idmappable.get(base)) is None:
        since = IDMAP_SINCE.get(filesystem_type(base) or "")
        known = since is not None and kernel_version() >= since
        _idmappable[base] = known
    return known


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of `release` (default: the running kernel's); (0, 0) if unreadable."""
    found = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def filesystem_type(path: str, text: str | None = None) -> str | None:
    """The type of the filesystem `path` (or its nearest existing parent) is on, by the
    mountinfo `text` (default: this process's)."""
    found = _mount_of(os.path.realpath(path), text)
    return found.fstype if found else None


def _mount_of(path: str, text: str | None) -> mountinfo.Mount | None:
    """The mount `path` is on: the one with the longest mount point above it."""
    if text is None:
        try:
            text = mountinfo.read()
        except OSError:
            return None
    best: mountinfo.Mount | None = None
    for m in mountinfo.parse(text):
        inside = path == m.point or path.startswith(m.point.rstrip("/") + "/")
        if inside and (best is None or len(m.point) >= len(best.point)):  # >=: a later mount
            best = m  # on the same point covers the earlier one
    return best


def _within_filesystem(path: str) -> str | None:
    """`path` as the root field of a mountinfo line names it: its path from the root of its
    filesystem (the mount it is on, that mount's root, then the rest of the path)."""
    found = _mount_of(path, None)
    if found is None:
        return None
    rest = path[len(found.point.rstrip("/")) :]
    return (found.root.rstrip("/") + rest) or "/"


def digest(entries: tuple[SnapshotEntry, ...]) -> str:
    h = hashlib.sha256()
    for name, kind, payload in entries:
        for part in (name.encode(), kind.encode(), payload):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
    return h.hexdigest()[:32]


def ensure(base: str, entries: tuple[SnapshotEntry, ...]) -> str | None:
    """The snapshot holding `entries` under `base`, made if missing, older ones swept; None
    when it cannot be written there (the plan then copies the files into the sandbox, as
    without a snapshot)."""
    path = _MADE.get(entries)
    made = False
    now = time.monotonic()
    if path is None or not os.path.isdir(path):
        if now - _failed.get(base, -RETRY_AFTER) < RETRY_AFTER:
            return None
        path = os.path.join(base, digest(entries))
        if not os.path.isdir(path):
            try:
                _write(base, path, entries)
            except OSError:
                _failed[base] = now
                return None
            made = True
        if len(_MADE) >= _MADE_MAX:
            _MADE.clear()
        _MADE[entries] = path
    _planned[path] = now
    last = _last_sweep.get(base)
    if made or last is None or now - last >= SWEEP_EVERY:
        _last_sweep[base] = now
        with contextlib.suppress(OSError):  # what is left is tried again at the next sweep
            sweep(base, now)
    return path


def _write(base: str, path: str, entries: tuple[SnapshotEntry, ...]) -> None:
    os.makedirs(base, 0o700, exist_ok=True)
    temp = os.path.join(base, TEMP_PREFIX + os.path.basename(path))
    shutil.rmtree(temp, ignore_errors=True)  # left by a daemon killed while writing it
    os.mkdir(temp, 0o755)
    try:
        os.chmod(temp, 0o755)  # whatever the umask: it is the sandbox's /etc
        for name, kind, payload in entries:
            target = os.path.join(temp, name)
            if kind == "dir":
                os.mkdir(target, 0o755)
            elif kind == "link":
                os.symlink(payload.decode(), target)
            else:  # "file", or "empty": a placeholder to bind over
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                try:
                    os.fchmod(fd, 0o644)
                    os.write(fd, payload)
                finally:
                    os.close(fd)
        os.rename(temp, path)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def in_use(base: str) -> set[str]:
    """The snapshot names under `base` that some mount namespace on the host has mounted: a
    mountinfo line on `base`'s filesystem whose root is the snapshot's directory or inside it.
    The whole path counts, not the name alone: another daemon's state dir on the same
    filesystem holds snapshots of the same names (they are named by their content)."""
    names = {n for n in _listdir(base) if not n.startswith(".")}
    base = os.path.realpath(base)
    within = _within_filesystem(base)
    if not names or within is None:
        return set()
    prefix = within.rstrip("/") + "/"
    dev = os.stat(base).st_dev
    want = f"{os.major(dev)}:{os.minor(dev)}"
    found: set[str] = set()
    seen: set[int] = set()
    for entry in _listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry}/ns/mnt").st_ino
            if ns in seen:
                continue
            seen.add(ns)
            text = mountinfo.read(entry)
        except OSError:  # gone, or a kernel thread
            continue
        for m in mountinfo.parse(text):
            if m.device == want and m.root.startswith(prefix):
                name = m.root[len(prefix) :].partition("/")[0]
                if name in names:
                    found.add(name)
    return found


def sweep(base: str, now: float | None = None) -> list[str]:
    """Remove the snapshots under `base` that nothing uses (and temporary directories left by
    a killed daemon); the names removed."""
    now = time.monotonic() if now is None else now
    recent = {
        os.path.basename(p)
        for p, t in _planned.items()
        if os.path.dirname(p) == base and now - t < RECENT
    }
    names = _listdir(base)
    if len([n for n in names if not n.startswith(".")]) <= len(recent):
        gone = [n for n in names if n.startswith(TEMP_PREFIX)]
    else:
        used = in_use(base) | recent
        gone = [n for n in names if n not in used]
    for name in gone:
        path = os.path.join(base, name)
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(path).st_mode):
                shutil.rmtree(path)
        _planned.pop(path, None)
    for path in [p for p in _MADE.values() if os.path.basename(p) in gone]:
        for key in [k for k, v in _MADE.items() if v == path]:
            del _MADE[key]
    return gone


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
