"""KeptFilesRelease: the views' kept cgroup fds are closed after a quiet period, on a real loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from supervisor.cgroups import files
from supervisor.engine.keptrelease import KeptFilesRelease
from tests.support.fds import open_fds_on


@pytest.fixture(autouse=True)
def keeping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "_keeping", True)  # a launch short of fds may have turned it off
    monkeypatch.setattr(files, "_read_since_check", False)


def test_armed_by_a_kept_fd_idle_when_none_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "memory.usage_in_bytes"
    path.write_text("4096\n")

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        release = KeptFilesRelease(loop, idle=0.01)
        try:
            assert not release.armed  # nothing kept: no timer, an idle daemon never wakes
            kept = files.KeptFile(str(path))
            kept.read_int()
            assert release.armed and open_fds_on(path) == 1
            # The first check finds the read above and keeps the fd; a later one closes it.
            while open_fds_on(path) == 1:
                await asyncio.sleep(0.005)
            assert not release.armed  # released, and nothing left to check
            kept.read_int()  # a view again: kept and armed again
            assert release.armed and open_fds_on(path) == 1
            kept.close()
        finally:
            release.close()
        assert not release.armed

    asyncio.run(scenario())
