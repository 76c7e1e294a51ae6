"""Service output: pipe drained into a size-rotated log file."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from supervisor.engine.output import Capture, RotatingLog


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
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sink = RotatingLog(tmp_path / "u.log", None, 1)
        capture, write_fd = Capture.new(loop, sink)
        os.write(write_fd, b"hello\n")
        await asyncio.sleep(0.05)
        # A "PID 1" holding the read end: here, this process under another fd number.
        spare = os.dup(capture.read_fd)
        capture.close()
        os.write(write_fd, b"while no daemon reads\n")
        again = Capture.reopen(loop, sink, os.getpid(), spare, capture.inode)
        assert again is not None
        assert Capture.reopen(loop, sink, os.getpid(), spare, capture.inode + 1) is None
        os.close(write_fd)  # EOF: the reader stops
        await asyncio.sleep(0.05)
        again.close()
        os.close(spare)

    asyncio.run(main())
    assert (tmp_path / "u.log").read_bytes() == b"hello\nwhile no daemon reads\n"
