"""The daemon's own directories: created, checked and tightened at every start.

    state_dir             0700 root:root (0750 root:<group> when the control socket is in it)
      units/, notify/,    0700
      transient/, netns/
    data_dir              0700 root:root
      credentials.key     0600: the key of credential digests (unit/credentials.py)
      overlay/            0700, and each overlay/<unit>/ and its work/ (upper/ stays 0755:
                          it is the mode of the sandbox's merged root)
    log_dir               0750 root:<group> (root:root if the group does not exist)
      <unit>.log*         0640 root:<log_dir's group> (engine/output.py, at every open)

Why so tight: a sandbox with `overlay = true` writes into `<data_dir>/overlay/<unit>/upper`
as root, setuid files included, so any host user who can reach that tree can run a setuid
root shell. Under the usual umask 022 a plain mkdir made every directory here 0755; only the
packaged tmpfiles.d config hid that. So the modes are set explicitly, whatever the umask and
however the daemon was started (run.sh, --data-dir, tests), and a directory left too open by
an earlier version or by hand is tightened.

The daemon refuses to start, with one line naming the directory, when a configured directory
or one of its parents (or one of the subdirectories of state_dir) is a symlink (sandboxd follows
none in its own trees), is not a directory, belongs to another user (who could swap or fill
it), is writable by every user without the sticky bit, or cannot be given its mode. A parent
writable by its group only draws a warning: distributions ship some (Ubuntu's /var/log is
root:syslog 0775).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from supervisor.config import DaemonConfig
from supervisor.errors import SupervisorError
from supervisor.linux import safefs
from supervisor.log import get_logger

log = get_logger()

PRIVATE = 0o700
SHARED_WITH_GROUP = 0o750
# Within the directories, set at start (other code creates them with these modes too).
NETNS_DIR = "netns"  # the held network namespaces, one bind-mounted nsfs file per unit
USERNS_DIR = "userns"  # the held user namespaces: the one mount of their holder (helduserns.py)
ETC_DIR = "etc"  # the shared read-only /etc snapshots, one per distinct content (etcsnap.py)
STATE_SUBDIRS = ("units", "notify", "transient", NETNS_DIR, USERNS_DIR, ETC_DIR)
OVERLAY = "overlay"


class DirectoryError(SupervisorError):
    """A configured directory the daemon must not use as it is."""

    def __init__(self, key: str, path: str, problem: str) -> None:
        super().__init__(f"{key} {path}: {problem}")


@dataclass(frozen=True)
class Wanted:
    key: str  # the config key, as the error names it
    path: str  # absolute
    mode: int
    gid: int


def _group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def wanted(config: DaemonConfig) -> list[Wanted]:
    """Each configured directory with its mode and group; one entry per distinct path (a path
    configured twice gets the stricter of the two)."""
    gid = _group_id(config.group)
    state = os.path.abspath(config.state_dir)
    socket_in_state = _under(os.path.abspath(config.socket_path), state)
    entries = [
        # Members of the group reach the control socket through the state directory.
        Wanted("state_dir", state, SHARED_WITH_GROUP, gid)
        if socket_in_state and gid is not None
        else Wanted("state_dir", state, PRIVATE, 0),
        Wanted("log_dir", os.path.abspath(config.log_dir), SHARED_WITH_GROUP, gid or 0),
        Wanted("data_dir", os.path.abspath(config.data_dir), PRIVATE, 0),
    ]
    merged: dict[str, Wanted] = {}
    for entry in entries:
        seen = merged.get(entry.path)
        if seen is None:
            merged[entry.path] = entry
        else:
            stricter_gid = seen.gid if seen.gid == entry.gid else 0
            merged[entry.path] = Wanted(seen.key, seen.path, seen.mode & entry.mode, stricter_gid)
    return list(merged.values())


def _owner(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def check_parents(key: str, path: str) -> list[str]:
    """Refuse parents that someone other than root could change; warnings for the rest."""
    warnings: list[str] = []
    me = os.geteuid()
    current = ""
    for part in [p for p in os.path.dirname(path).split("/") if p]:
        current += "/" + part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            break  # created below, by root
        where = f"its parent {current}"
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(current)
            raise DirectoryError(
                key, path, f"{where} is a symlink (to {target}); name the real path"
            )
        if not stat.S_ISDIR(st.st_mode):
            raise DirectoryError(key, path, f"{where} is not a directory")
        if st.st_uid not in (0, me):
            raise DirectoryError(
                key, path, f"{where} belongs to {_owner(st.st_uid)}, who could swap the "
                "directory for another; use a path whose every parent is root's"
            )  # fmt: skip
        sticky = bool(st.st_mode & stat.S_ISVTX)
        if st.st_mode & stat.S_IWOTH and not sticky:
            raise DirectoryError(
                key, path, f"{where} is writable by every user (mode "
                f"{stat.S_IMODE(st.st_mode):04o}), who could swap the directory for another"
            )  # fmt: skip
        if st.st_mode & stat.S_IWGRP and not sticky and st.st_gid != 0:
            warnings.append(f"{key} {path}: {where} is writable by group {st.st_gid}")
    return warnings


def _tighten(fd: int, key: str, path: str, mode: int, gid: int | None) -> None:
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        raise DirectoryError(
            key, path, f"owned by {_owner(st.st_uid)}, not by root: that user could put files "
            f"in it that the daemon uses; chown it to root or choose another {key}"
        )  # fmt: skip
    try:
        if gid is not None and st.st_gid != gid:
            os.fchown(fd, -1, gid)
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    except OSError as exc:
        raise DirectoryError(
            key, path, f"mode {stat.S_IMODE(st.st_mode):04o} group {st.st_gid} cannot be made "
            f"{mode:04o} group {gid}: {exc.strerror}"
        ) from None  # fmt: skip
    if stat.S_IMODE(st.st_mode) & ~mode:
        log.info("daemon.dir_tightened", dir=path, was=f"{stat.S_IMODE(st.st_mode):04o}",
                 now=f"{mode:04o}")  # fmt: skip


def _open_child(parent: int, name: str) -> int | None:
    """A subdirectory of ours, never through a symlink; None if it is missing or not a
    directory (the code that uses it refuses it then)."""
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                       dir_fd=parent)  # fmt: skip
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # ELOOP: a symlink
        log.warning("daemon.dir_skipped", dir=name, error=exc.strerror)
        return None


def _tighten_child(parent: int, key: str, path: str, name: str, mode: int) -> int | None:
    """Tighten one directory inside a configured one. Its parent already keeps everyone but
    root out, so a problem here is worth a warning, not a refusal to start."""
    fd = _open_child(parent, name)
    if fd is not None:
        try:
            _tighten(fd, key, f"{path}/{name}", mode, None)
        except DirectoryError as exc:
            log.warning("daemon.dir_skipped", dir=f"{path}/{name}", error=str(exc))
            os.close(fd)
            return None
    return fd


def _tighten_overlays(data_fd: int, data_dir: str) -> None:
    """<data_dir>/overlay and, in it, each unit's directory and work directory: 0700."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(OVERLAY, PRIVATE, dir_fd=data_fd)
    overlay = _tighten_child(data_fd, "data_dir", data_dir, OVERLAY, PRIVATE)
    if overlay is None:
        return
    try:
        for unit in os.listdir(overlay):
            where = f"{data_dir}/{OVERLAY}"
            fd = _tighten_child(overlay, "data_dir", where, unit, PRIVATE)
            if fd is not None:
                work = _tighten_child(fd, "data_dir", f"{where}/{unit}", "work", PRIVATE)
                if work is not None:
                    os.close(work)
                os.close(fd)
    finally:
        os.close(overlay)


def _refuse_link(parent: int, key: str, path: str, name: str) -> None:
    """A state subdirectory replaced by a symlink or another file: the records and sockets
    there would be another tree's, so the daemon refuses to start, saying which, rather than
    failing later on a path it will not follow. Nothing is removed: what is there may be
    the operator's (a directory moved aside), and the running sandboxes are not touched."""
    try:
        st = os.lstat(name, dir_fd=parent)
    except FileNotFoundError:
        return  # made below
    where = f"{path}/{name}"
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(name, dir_fd=parent)
        raise DirectoryError(
            key, path, f"{where} is a symlink (to {target}), and sandboxd follows none in its "
            "own trees; put the directory itself there"
        )  # fmt: skip
    if not stat.S_ISDIR(st.st_mode):
        raise DirectoryError(key, path, f"{where} is not a directory")


def prepare(config: DaemonConfig) -> None:
    """Create and tighten every directory of the daemon; DirectoryError if one cannot be."""
    for entry in wanted(config):
        for warning in check_parents(entry.key, entry.path):
            log.warning("daemon.dir_parent_writable", detail=warning)
        try:
            fd = safefs.open_dir(entry.path, mkdir_mode=entry.mode)
        except OSError as exc:
            raise DirectoryError(entry.key, entry.path, exc.strerror or str(exc)) from None
        try:
            _tighten(fd, entry.key, entry.path, entry.mode, entry.gid)
            if entry.path == os.path.abspath(config.state_dir):
                for name in STATE_SUBDIRS:
                    _refuse_link(fd, entry.key, entry.path, name)
                    sub = _tighten_child(fd, entry.key, entry.path, name, PRIVATE)
                    if sub is not None:
                        os.close(sub)
            if entry.path == os.path.abspath(config.data_dir):
                _tighten_overlays(fd, entry.path)
        finally:
            os.close(fd)


def absolute(config: DaemonConfig) -> DaemonConfig:
    """`config` with its directories made absolute, as prepare() checked them: a relative
    path would otherwise depend on the working directory of whatever uses it later."""
    return config.model_copy(
        update={
            key: Path(os.path.abspath(getattr(config, key)))
            for key in ("state_dir", "data_dir", "log_dir")
        }
    )
