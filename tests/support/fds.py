"""This process's open fds, as the kernel lists them (/proc/self/fd)."""

from __future__ import annotations

import os
from pathlib import Path


def open_fds_on(path: Path) -> int:
    """How many of this process's fds are open on `path` (an fd closed while listing is not)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except FileNotFoundError:
            continue
    return count
