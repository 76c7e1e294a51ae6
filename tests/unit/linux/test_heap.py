"""heap.trim gives the C heap's free pages below a live block back to the kernel, which glibc's
free() alone does not (it trims only the heap's top). Checked on the real process: RssAnon."""

from __future__ import annotations

import ctypes
import gc

import pytest

from supervisor.linux import heap

BLOCK = 4096  # above pymalloc's 512 bytes: from glibc's heap
COUNT = 8192  # 32 MiB of blocks


def _rss_anon_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon")


def test_trim_releases_free_pages_below_a_live_block() -> None:
    if getattr(ctypes.CDLL(None), "malloc_trim", None) is None:
        pytest.skip("no malloc_trim: not glibc")
    blocks = [ctypes.create_string_buffer(BLOCK) for _ in range(COUNT)]
    for b in blocks:
        b[0] = b"x"  # touched: resident
    top = blocks.pop()  # the newest, kept: pins the heap's top, so free() cannot trim
    blocks.clear()
    gc.collect()
    before = _rss_anon_kib()
    heap.trim()
    after = _rss_anon_kib()
    # Most of the 32 MiB freed under `top` was still resident, and is not after the trim.
    assert before - after > COUNT * BLOCK // 1024 // 2, (before, after)
    assert top.raw[0:1] == b"x"  # the live block is untouched
