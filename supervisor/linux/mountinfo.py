"""One reader of `/proc/<pid>/mountinfo` lines (proc(5)), for every module that asks where
something is mounted: the cgroup hierarchies (proc_cgroup.py), the filesystem under the state
directory and which sandboxes still show an /etc snapshot (sandbox/host/etcsnap.py).

A line is `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`;
the optional fields vary in number, so the part after ` - ` is found by that separator, never
by position. The kernel escapes space, tab, newline and backslash in paths as octal (`\\040`),
so a path is compared only after `unescape`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

_OCTAL = re.compile(r"\\([0-7]{3})")


class Mount(NamedTuple):
    device: str  # "major:minor" of the filesystem
    root: str  # which directory of that filesystem the mount shows
    point: str  # where it is mounted, in the reader's mount namespace
    fstype: str
    super_options: str


def unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m[1], 8)), field) if "\\" in field else field


def parse(text: str) -> Iterator[Mount]:
    """Each well-formed line's mount; a line that is not one is skipped."""
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, fs = left.split(), right.split()
        if not sep or len(fields) < 6 or len(fs) < 3:
            continue
        yield Mount(fields[2], unescape(fields[3]), unescape(fields[4]), fs[0], fs[2])


def read(pid: int | str = "self") -> str:
    """The mountinfo text of process `pid` (OSError if it is gone or unreadable)."""
    with open(f"/proc/{pid}/mountinfo") as f:
        return f.read()
