"""What a sandbox's root needs to know about the host, looked at once per launch by the daemon.

`HostLayout.probe()` stats every host path the mount plan may bind, mask or copy, so that
`rootplan.plan_root()` stays pure (unit tests hand it a made-up layout) and the forked children
never look at the host themselves. The path lists live here because they are both what is
probed and what the plan shows of the host.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

from supervisor.linux.syscalls import MS_RDONLY, PRESERVED_MOUNT_FLAGS, FileKind, open_nofollow
from supervisor.sandbox.host.settledprobe import SettledProbe

HOST_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What programs need from /etc to run, resolve names and verify TLS; nothing with secrets.
ETC_ENTRIES = (
    "passwd", "group", "nsswitch.conf", "resolv.conf", "host.conf", "gai.conf", "services",
    "protocols", "networks", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ssl",
    "ca-certificates", "ca-certificates.conf", "alternatives", "localtime", "timezone",
    "mime.types", "os-release", "debian_version", "login.defs", "shells", "environment",
)  # fmt: skip
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def _every_cpu(leaf: str) -> tuple[str, ...]:
    """`leaf` in the sysfs directory of every CPU the kernel may ever bring up (the possible
    set is fixed at boot), so a CPU brought online later is covered at the next launch."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            spec = f.read().strip()
    except OSError:
        return ()
    cpus: list[int] = []
    for part in filter(None, spec.split(",")):
        first, _, last = part.partition("-")
        cpus += range(int(first), int(last or first) + 1)
    return tuple(f"/sys/devices/system/cpu/cpu{n}/{leaf}" for n in cpus)


# Hidden from every sandbox (an empty read-only tmpfs on a directory, /dev/null on a file):
# kernel memory and internals that help an exploit, host hardware details, and counters that
# leak what the host and its other tenants are doing (interrupt and thermal-throttle counts are
# side channels). A superset of Docker's list; /proc/kmsg too, the kernel log the profile's
# syslog(2) refusal is about (reading it would also take messages from the host's logger).
MASKED = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/kmsg", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
    "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
    *_every_cpu("thermal_throttle"),
)  # fmt: skip
# Readable but never writable: kernel tunables and hardware state (Docker's list).
READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
# Where the host root's tmpfs is assembled: a directory no bind source lives under.
STAGING_CANDIDATES = ("/mnt", "/media", "/srv", "/opt", "/boot", "/tmp")


@dataclass(frozen=True, slots=True)  # dozens per probe: no __dict__ each
class HostPath:
    kind: FileKind
    link: str = ""  # the symlink's target
    flags: int = 0  # statvfs flags of the mount holding it (after following links)
    data: bytes | None = None  # content, for /etc files copied into the root


# Copied /etc files, keyed by path: (mtime_ns, size, inode) -> content. Files are small and
# rarely change; stat-ing them per launch keeps copies current.
_ETC_CACHE: dict[str, tuple[tuple[int, int, int], bytes]] = {}
_ETC_COPY_MAX = 1 << 20


def _probe(path: str, copy: bool = False) -> HostPath | None:
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return HostPath("link", os.readlink(path))
        flags = os.statvfs(path).f_flag & (PRESERVED_MOUNT_FLAGS | MS_RDONLY)
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return HostPath("dir", flags=flags)
    if not stat.S_ISREG(st.st_mode):
        return HostPath("other", flags=flags)
    data = None
    if copy and st.st_size <= _ETC_COPY_MAX:
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = _ETC_CACHE.get(path)
        if cached is None or cached[0] != key:
            with open(path, "rb") as f:
                cached = (key, f.read())
            _ETC_CACHE[path] = cached
        data = cached[1]
    return HostPath("file", flags=flags, data=data)


# What changes only through an entry of its directory or a mount (settledprobe.py): the host
# root's top directories and staging candidates, /dev's nodes, the /etc entries copied.
_SETTLED = SettledProbe(
    {"/": (*(d.lstrip("/") for d in HOST_DIRS + STAGING_CANDIDATES), "dev"),
     "/dev": DEVICES, "/etc": ETC_ENTRIES},
    "/etc", _probe,
)  # fmt: skip


@dataclass(frozen=True)
class HostLayout:
    """What the plan needs to know about the host: one `HostPath` per path looked at.

    The sandbox shares the host's kernel, so /proc and /sys entries seen here exist there too.
    """

    entries: dict[str, HostPath] = field(default_factory=dict)
    # Paths inside a root directory (keyed as the sandbox names them, "/proc"), looked at with
    # no symlink followed: what the plan would otherwise have to create in there.
    in_root: dict[str, HostPath] = field(default_factory=dict)

    @classmethod
    def probe(cls, extra: Iterable[str] = (), host_root: bool = True) -> HostLayout:
        """`host_root`: the root is the host's, so its system trees and /etc are looked at
        too (a root directory or an image has its own: half the paths, not stat-ed)."""
        entries: dict[str, HostPath] = {}
        # The paths under /, /dev and /etc as last probed, unless a watch saw them change
        # (settledprobe.py); the others (/proc, /sys, the unit's own) are probed now.
        settled = _SETTLED.entries()
        system = HOST_DIRS if host_root else ()
        etc = [f"/etc/{name}" for name in ETC_ENTRIES] if host_root else []
        devices = [f"/dev/{dev}" for dev in DEVICES]
        for path in (*system, *STAGING_CANDIDATES, *MASKED, *READ_ONLY, *extra, "/dev",
                     *devices, *etc):  # fmt: skip
            found = settled[path] if path in settled else _probe(path, path in etc)
            if found is not None:
                entries[path] = found
        return cls(entries)

    def get(self, path: str) -> HostPath | None:
        return self.entries.get(path)

    def with_paths(self, paths: Iterable[str]) -> HostLayout:
        """This layout plus `paths` on the host, looked at as `probe` does (e.g. a snapshot
        the daemon made after the probe)."""
        found = {path: entry for path in paths if (entry := _probe(path)) is not None}
        return dataclasses.replace(self, entries={**self.entries, **found})

    def with_root_paths(self, root: str, paths: Iterable[str]) -> HostLayout:
        """This layout plus `paths` (absolute, as the sandbox sees them) inside the directory
        `root`, each looked at without following a symlink in any component: a link is
        reported as "link" (the launch refuses it as a mount target), never followed."""
        found: dict[str, HostPath] = {}
        for path in paths:
            entry = _probe_in_root(root, path)
            if entry is not None:
                found[path] = entry
        return dataclasses.replace(self, in_root={**self.in_root, **found})

    def in_root_kind(self, path: str) -> FileKind | None:
        entry = self.in_root.get(path)
        return entry.kind if entry is not None else None


def _probe_in_root(root: str, path: str) -> HostPath | None:
    try:
        fd = open_nofollow(os.path.join(root, path.lstrip("/")), os.O_PATH)
    except OSError as err:
        return HostPath("link") if err.errno == errno.ELOOP else None
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if stat.S_ISDIR(mode):
        return HostPath("dir")
    return HostPath("file" if stat.S_ISREG(mode) else "other")
