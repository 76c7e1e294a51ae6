"""Running nft from the event loop (supervisor/linux/nftables.py), with stand-in nft scripts:
the batch arrives whole on stdin, errors carry nft's message, and a slow or cancelled run is
killed and reaped without blocking the loop or leaving a thread."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import pytest

from supervisor.linux import nftables
from supervisor.linux.nftables import NftablesError


def fake_nft(tmp_path: Path, body: str) -> str:
    """An executable shell script standing in for nft; `body` may use $OUT (a file in tmp)."""
    path = tmp_path / "nft"
    path.write_text(f'#!/bin/sh\nOUT="{tmp_path}/out"\n{body}\n')
    path.chmod(0o755)
    return str(path)


def test_the_batch_arrives_whole_on_stdin_with_json_flags(tmp_path: Path) -> None:
    nft = fake_nft(tmp_path, 'echo "$@" > "$OUT.argv"; cat > "$OUT"')
    # Far more than a pipe holds (64 KiB): nothing may block on the way in.
    commands = [{"add": {"table": {"family": "bridge", "name": f"t{i}"}}} for i in range(20000)]
    threads = threading.active_count()  # other tests' idle threads may still be about
    asyncio.run(nftables.run(commands, nft=nft))
    assert (tmp_path / "out.argv").read_text() == "-j -f -\n"
    assert json.loads((tmp_path / "out").read_text()) == {"nftables": commands}
    assert threading.active_count() == threads  # it started none


def test_nfts_refusal_is_an_error_with_its_message(tmp_path: Path) -> None:
    nft = fake_nft(
        tmp_path,
        "echo 'internal:0:0-0: Error: No such file or directory' >&2\n"
        "echo 'internal:0:0-0: Error: No such file or directory' >&2\n"
        "echo 'Error: Could not process rule: Operation not supported' >&2\nexit 1",
    )
    with pytest.raises(NftablesError) as err:
        asyncio.run(nftables.run([], nft=nft))
    assert str(err.value) == (
        f"{nft} failed (exit code 1): internal:0:0-0: Error: No such file or directory; "
        "Error: Could not process rule: Operation not supported"
    )


def test_a_missing_binary_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(NftablesError, match="cannot run /nonexistent/nft: No such file"):
        asyncio.run(nftables.run([], nft="/nonexistent/nft"))


def test_nft_is_found_in_the_system_directories_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nft(tmp_path, "exit 0")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ.get('PATH', '')}")
    found = None
    try:
        found = nftables.find_nft()
    except NftablesError as err:
        assert "install the nftables package" in str(err)
    assert found != str(tmp_path / "nft")
    assert found is None or os.path.dirname(found) in nftables.SYSTEM_PATH.split(":")


def children() -> set[int]:
    """Our child processes, zombies included (a child stays listed until it is reaped)."""
    found: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            found.update(int(pid) for pid in f.read().split())
    return found


async def wait_reaped(before: set[int], timeout: float = 10) -> None:
    """Let the loop run until we have no child beyond `before` (the stand-in is reaped)."""
    deadline = time.monotonic() + timeout
    while children() - before:
        assert time.monotonic() < deadline, f"not reaped: {children() - before}"
        await asyncio.sleep(0.01)


def test_a_wedged_nft_is_killed_and_reaped(tmp_path: Path) -> None:
    nft = fake_nft(tmp_path, "exec sleep 600")
    before = children()

    async def go() -> None:
        with pytest.raises(NftablesError, match=r"did not finish within 0\.2s; killed"):
            await nftables.run([], nft=nft, timeout=0.2)
        await wait_reaped(before)

    asyncio.run(go())


def test_a_cancelled_run_kills_and_reaps_nft(tmp_path: Path) -> None:
    nft = fake_nft(tmp_path, ': > "$OUT.started"; exec sleep 600')
    started = tmp_path / "out.started"
    before = children()

    async def go() -> None:
        task = asyncio.create_task(nftables.run([], nft=nft))
        deadline = time.monotonic() + 10
        while not started.exists():
            assert time.monotonic() < deadline, "the stand-in never started"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_reaped(before)

    asyncio.run(go())
    assert threading.active_count() == 1
