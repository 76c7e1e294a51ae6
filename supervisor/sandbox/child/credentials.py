"""PID 1 puts the unit's credentials in place, after its root is built and before it drops
privileges (stage.py, step 6).

Threats: the bytes must never touch a host file or the host's mount table, so they come over
the plan pipe and go into a ramfs mounted here, in the sandbox's private mount namespace (a
ramfs is never swapped out; tmpfs only where ramfs is missing). Other users inside the sandbox
must not read them: the directory is 0500 and each file 0400, both owned by the service's user.
The service must not replace them: the mount is made read-only, and nosuid, nodev, noexec.
Nothing of a value reaches a mount option, an error message or the environment.
"""

from __future__ import annotations

import errno
import os

from supervisor.linux.syscalls import MS_BIND, MS_RDONLY, MS_REMOUNT, Syscalls
from supervisor.linux.users import Identity
from supervisor.sandbox.wire.mounts import NOSUID_NODEV_NOEXEC
from supervisor.sandbox.wire.protocol import StageFailure

STAGE = "credentials"  # as unit/credentials.py: launch-error:credentials


def _fail(what: str, err: OSError) -> StageFailure:
    return StageFailure.from_oserror(STAGE, what, err)


def _mount(sys: Syscalls, path: str) -> None:
    try:
        sys.mount("ramfs", path, "ramfs", NOSUID_NODEV_NOEXEC, "mode=0700")
    except OSError as err:
        if err.errno != errno.ENODEV:
            raise _fail(f"mount ramfs on {path}", err) from None
        try:
            sys.mount("tmpfs", path, "tmpfs", NOSUID_NODEV_NOEXEC, "mode=0700,size=16m")
        except OSError as err2:
            raise _fail(f"mount tmpfs on {path}", err2) from None


def _write(path: str, data: bytes, who: Identity) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o400)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchown(fd, who.uid, who.gid)
        os.fchmod(fd, 0o400)
    finally:
        os.close(fd)


def install(sys: Syscalls, items: tuple[tuple[str, bytes], ...], who: Identity, path: str) -> None:
    """`items` as files under `path` (created: /run is the sandbox's own tmpfs)."""
    if not items:
        return
    try:
        if sys.kind(path) is None:
            sys.mkdir(path, 0o700, parents=True)
    except OSError as err:
        raise _fail(f"mkdir {path}", err) from None
    _mount(sys, path)
    for name, data in items:
        try:
            _write(f"{path}/{name}", data, who)
        except OSError as err:
            raise _fail(f"write {path}/{name}", err) from None
    try:
        os.chown(path, who.uid, who.gid)
        os.chmod(path, 0o500)
        sys.mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | NOSUID_NODEV_NOEXEC, None)
    except OSError as err:
        raise _fail(f"make {path} read-only", err) from None
