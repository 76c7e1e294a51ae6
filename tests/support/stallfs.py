"""A filesystem whose writes stall on demand: a FUSE passthrough to a backing directory.

A stalled disk (a hung NFS server, a dying drive) cannot be faked in-process: the point is a
write(2) that stays in the kernel. device-mapper is not in every test kernel; FUSE is. This
runs the filesystem in its own process (`python -m tests.support.stallfs BACKING MOUNT FLAG`,
through `stalling_fs`), so that a stalled write holds only the writer, never the test: while
the file FLAG exists, every write waits for it to go away; while FLAG-reads exists, every read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.waiting import wait_for


class Stall:
    """The running filesystem: `stall()` and `resume()` its writes."""

    def __init__(self, mount: Path, flag: Path) -> None:
        self.mount, self.flag = mount, flag

    def stall(self) -> None:
        self.flag.touch()

    def stall_reads(self) -> None:
        _reads_flag(self.flag).touch()

    def resume(self) -> None:
        self.flag.unlink(missing_ok=True)
        _reads_flag(self.flag).unlink(missing_ok=True)


def _reads_flag(flag: Path) -> Path:
    return flag.with_name(flag.name + "-reads")


def fuse_missing() -> str | None:
    """Why a stalling filesystem cannot run here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse in this kernel"
    if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
        return "fusermount is not installed (Debian fuse3; scripts/setup.sh installs it)"
    try:
        import mfusepy  # noqa: F401, PLC0415  (loading it loads libfuse, which may be absent)
    except (ImportError, OSError) as exc:  # OSError: the package is there, libfuse is not
        return f"mfusepy cannot load libfuse: {exc}"
    return None


@contextlib.contextmanager
def stalling_fs(mount: Path) -> Iterator[Stall]:
    """A stalling filesystem mounted on `mount` (created) for the block; unmounted, its process
    stopped and its backing directory removed afterwards, also when the block raised."""
    mount.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sbx-stallfs-", dir="/tmp"))
    backing, flag = work / "backing", work / "stall"
    backing.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.stallfs", str(backing), str(mount), str(flag)],
        stdout=subprocess.DEVNULL, stderr=open(work / "stallfs.log", "wb"),  # noqa: SIM115
        cwd=Path(__file__).resolve().parents[2],  # the repository root: tests.support imports
    )  # fmt: skip
    stall = Stall(mount, flag)
    try:
        wait_for(lambda: os.path.ismount(mount) or proc.poll() is not None, 60)
        assert proc.poll() is None, (work / "stallfs.log").read_text()
        yield stall
    finally:
        stall.resume()  # a stalled writer must be let go before the unmount
        fusermount = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount"
        if os.path.ismount(mount):
            subprocess.run([fusermount, "-u", "-z", str(mount)], check=False)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def _serve(backing: str, mount: str, flag: str) -> None:
    from mfusepy import FUSE, FuseOSError, Operations  # noqa: PLC0415  (see fuse_missing)

    reads_flag = str(_reads_flag(Path(flag)))

    def real(path: str) -> str:
        return os.path.join(backing, path.lstrip("/"))

    class Passthrough(Operations):  # type: ignore[misc]
        use_ns = True

        def __call__(self, op: str, *args: Any) -> Any:
            try:
                return super().__call__(op, *args)
            except OSError as exc:
                raise FuseOSError(exc.errno or errno.EIO) from None

        def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
            st = os.lstat(real(path))
            keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns",
                    "st_mtime_ns", "st_ctime_ns")  # fmt: skip
            attrs = {k.removesuffix("_ns"): getattr(st, k) for k in keys}
            return attrs

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(real(path))]

        def access(self, path: str, amode: int) -> int:
            return 0 if os.access(real(path), amode) else -errno.EACCES

        def chmod(self, path: str, mode: int) -> int:
            os.chmod(real(path), mode)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            os.chown(real(path), uid, gid)
            return 0

        def mkdir(self, path: str, mode: int) -> int:
            os.mkdir(real(path), mode)
            return 0

        def rmdir(self, path: str) -> int:
            os.rmdir(real(path))
            return 0

        def unlink(self, path: str) -> int:
            os.unlink(real(path))
            return 0

        def rename(self, old: str, new: str, flags: int = 0) -> int:
            os.rename(real(old), real(new))
            return 0

        def utimens(self, path: str, times: Any = None) -> int:
            os.utime(real(path), ns=times)
            return 0

        def open(self, path: str, flags: int) -> int:
            return os.open(real(path), flags)

        def create(self, path: str, mode: int, fi: Any = None) -> int:
            return os.open(real(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            while os.path.exists(reads_flag):
                time.sleep(0.05)
            return os.pread(fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            while os.path.exists(flag):  # the stall: this request waits, the others do not
                time.sleep(0.05)
            return os.pwrite(fh, data, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            os.truncate(real(path), length)
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            os.fsync(fh)
            return 0

        def release(self, path: str, fh: int) -> int:
            os.close(fh)
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            st = os.statvfs(real(path))
            keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                    "f_files", "f_flag", "f_frsize", "f_namemax")  # fmt: skip
            return {k: getattr(st, k) for k in keys}

    FUSE(Passthrough(), mount, foreground=True, allow_other=True, nothreads=False)


if __name__ == "__main__":
    _serve(*sys.argv[1:4])
