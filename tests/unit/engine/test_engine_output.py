"""Service output: pipe drained into a size-rotated log file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.engine.output import PIPE_SIZE, Capture, RotatingLog
from supervisor.linux import pipes
from supervisor.linux.pipes import OutputPipe


def test_rotation_keeps_n_files(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "u.log", max_size=100, keep=2)
    for i in range(10):
        log.write(f"{i}".encode() * 40)  # 40 bytes: two writes fit, the third rotates
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["u.log", "u.log.1", "u.log.2"]
    assert (tmp_path / "u.log").read_bytes() == b"8" * 40 + b"9" * 40
    assert (tmp_path / "u.log.1").read_bytes() == b"6" * 40 + b"7" * 40
    assert (tmp_path / "u.log.2").read_bytes() == b"4" * 40 + b"5" * 40
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir())


def test_rotation_continues_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "u.log").write_bytes(b"x" * 90)
    log = RotatingLog(tmp_path / "u.log", max_size=100, keep=1)
    log.write(b"y" * 20)
    log.close()
    assert (tmp_path / "u.log.1").read_bytes() == b"x" * 90
    assert (tmp_path / "u.log").read_bytes() == b"y" * 20


def test_capture_drains_and_reopens(tmp_path: Path) -> None:
    async def logged(text: bytes) -> None:
        async with asyncio.timeout(60):
            while not (tmp_path / "u.log").exists() or (tmp_path / "u.log").read_bytes() != text:
                await asyncio.sleep(0.005)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sink = RotatingLog(tmp_path / "u.log", None, 1)
        capture, write_fd = Capture.new(loop, sink)
        os.write(write_fd, b"hello\n")
        await logged(b"hello\n")
        # A "PID 1" holding the read end: here, this process under another fd number.
        spare = os.dup(capture.read_fd)
        capture.close()
        os.write(write_fd, b"while no daemon reads\n")
        again = Capture.reopen(loop, sink, os.getpid(), spare, capture.inode)
        assert again is not None
        # A pipe nobody holds any more (not inode + 1: that may be the writer's staging pipe).
        gone_r, gone_w = os.pipe()
        gone = os.fstat(gone_r).st_ino
        os.close(gone_r)
        os.close(gone_w)
        assert Capture.reopen(loop, sink, os.getpid(), spare, gone) is None
        os.close(write_fd)  # EOF: the reader stops
        await logged(b"hello\nwhile no daemon reads\n")
        again.close()
        os.close(spare)

    asyncio.run(main())
    assert (tmp_path / "u.log").read_bytes() == b"hello\nwhile no daemon reads\n"


def test_a_silent_service_keeps_a_small_pipe_and_its_first_output_grows_it(
    tmp_path: Path,
) -> None:
    # An idle sandbox's pipe costs the kernel its slot array, sized at once: 640 bytes for the
    # default 64 KiB, four pages for 1 MiB. A service that writes gets the 1 MiB.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        capture, write_fd = Capture.new(loop, RotatingLog(tmp_path / "u.log", None, 1))
        try:
            assert pipes.size(write_fd) == 1 << 16
            os.write(write_fd, b"hello\n")
            async with asyncio.timeout(60):
                while pipes.size(write_fd) != PIPE_SIZE:
                    await asyncio.sleep(0.005)
        finally:
            capture.close()
            os.close(write_fd)

    if int(Path("/proc/sys/fs/pipe-max-size").read_text()) < PIPE_SIZE:
        pytest.skip("this host caps pipes below 1 MiB (/proc/sys/fs/pipe-max-size)")
    asyncio.run(main())


def test_take_moves_pipe_bytes_into_rotated_files(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "u.log", max_size=100, keep=3)
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK)
    try:
        os.write(write_fd, b"".join(b"%02d\n" % i for i in range(60)))  # 180 bytes
        moved = 0
        with pytest.raises(BlockingIOError):
            while True:
                moved += log.take(read_fd)
        assert moved == 180
        os.close(write_fd)
        write_fd = -1
        assert log.take(read_fd) == 0  # end of file
    finally:
        log.close()
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    # Files fill up to max_size exactly, then rotate; nothing is lost or repeated.
    assert (tmp_path / "u.log.1").stat().st_size == 100
    whole = (tmp_path / "u.log.1").read_bytes() + (tmp_path / "u.log").read_bytes()
    assert whole == b"".join(b"%02d\n" % i for i in range(60))


def test_take_writes_at_the_end_of_a_file_truncated_by_hand(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "u.log", max_size=None, keep=1)
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK)
    try:
        os.write(write_fd, b"before\n")
        log.take(read_fd)
        (tmp_path / "u.log").write_bytes(b"")  # `: > u.log` while the daemon has it open
        os.write(write_fd, b"after\n")
        log.take(read_fd)
    finally:
        log.close()
        os.close(read_fd)
        os.close(write_fd)
    assert (tmp_path / "u.log").read_bytes() == b"after\n"  # no hole of zeros before it


# A process that moves output from a pipe into a log and is SIGKILLed the instant a syscall
# has taken bytes out of the pipe: where the daemon was when it lost line 28 (issue 30).
_KILLED_MID_TAKE = """
import os, signal, sys
from pathlib import Path
from supervisor.engine.output import RotatingLog

def killed_after(call):
    def wrapper(*args, **kwargs):
        result = call(*args, **kwargs)
        if result:  # bytes have left the pipe: die before anything else runs
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapper

os.read, os.splice = killed_after(os.read), killed_after(os.splice)
log = RotatingLog(Path(sys.argv[1]), None, 1)
log._splice = sys.argv[3] == "splice"
log.take(int(sys.argv[2]))
"""


@pytest.mark.parametrize("mode", ["splice", "copy"])
def test_a_daemon_killed_mid_take_loses_no_output(tmp_path: Path, mode: str) -> None:
    """Deterministic form of the lost line: each byte is in the pipe or in the file, never only
    in a dead process. The take copies with tee(2) and consumes from the pipe only once the
    file has the bytes, so a kill right after the write leaves them in both (written twice by
    the next daemon, never lost), on the splice path and on the copy path alike."""
    sent = b"".join(b"line %d\n" % i for i in range(100))
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK)
    try:
        os.write(write_fd, sent)
        child = subprocess.run(
            [sys.executable, "-c", _KILLED_MID_TAKE, str(tmp_path / "u.log"), str(read_fd), mode],
            pass_fds=[read_fd],
            check=False,
        )
        assert child.returncode == -signal.SIGKILL
        left = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(read_fd, 1 << 16):
                left += chunk
    finally:
        os.close(read_fd)
        os.close(write_fd)
    logged = (tmp_path / "u.log").read_bytes()
    assert left == sent, "nothing left the pipe before it was in the file"
    if mode == "splice":
        assert logged and sent.startswith(logged), "the kill came after bytes reached the file"
    else:
        assert logged == b"", "copy: read from the staging pipe into memory, then killed"


def test_a_drop_during_a_stalled_write_skips_what_the_writer_copied(tmp_path: Path) -> None:
    """The loop drops while the writer thread holds a teed copy: the teed bytes are not
    counted as dropped (they reach the file), and the writer consumes only what is left."""
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK)
    spare_r, spare_w = os.pipe2(os.O_NONBLOCK)
    try:
        os.write(write_fd, b"a" * 10 + b"b" * 20)
        pipe = OutputPipe(read_fd)
        assert pipe.tee(spare_w, 10) == 10  # the writer's copy; its write then stalls
        assert pipe.drop(4) == (4, 0)  # inside the copy: nothing dropped
        assert pipe.drop(26) == (26, 20)  # the rest of the copy, then 20 really dropped
        pipe.consume()  # the write returned: nothing of the copy is left to take out
        with pytest.raises(BlockingIOError):
            os.read(read_fd, 1)
        assert os.read(spare_r, 100) == b"a" * 10
    finally:
        for fd in (read_fd, write_fd, spare_r, spare_w):
            os.close(fd)
