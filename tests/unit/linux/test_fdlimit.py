"""Running out of file descriptors: found in any exception chain, said in one line, and the
headroom a launch needs checked exactly (in a child process with a low limit of its own)."""

from __future__ import annotations

import errno
import subprocess
import sys

from supervisor.errors import LaunchError
from supervisor.linux import fdlimit


def test_exhaustion_is_found_wherever_it_was_raised() -> None:
    assert fdlimit.exhausted(OSError(errno.EMFILE, "Too many open files")) == errno.EMFILE
    assert fdlimit.exhausted(LaunchError("u", "forkserver", "x", errno.ENFILE)) == errno.ENFILE
    try:
        try:
            raise OSError(errno.EMFILE, "Too many open files")
        except OSError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as wrapped:
        assert fdlimit.exhausted(wrapped) == errno.EMFILE
    assert fdlimit.exhausted(OSError(errno.ENOENT, "No such file")) is None
    assert fdlimit.exhausted(LaunchError("u", "exec", "x", errno.ENOENT)) is None


def test_descriptions_name_the_limit_and_the_remedy() -> None:
    text = fdlimit.describe(OSError(errno.EMFILE, ""), errno.EMFILE)
    assert text.startswith("too many open files (EMFILE: none free of the daemon's limit of ")
    assert text.endswith("raise LimitNOFILE= or run fewer units)")
    short = fdlimit.describe(fdlimit.NoHeadroom(errno.EMFILE, 24), errno.EMFILE)
    assert "fewer than 24 free, kept for launches and the API" in short
    assert "ENFILE" in fdlimit.describe(OSError(errno.ENFILE, ""), errno.ENFILE)


CHILD = """
import os, resource, sys
from supervisor.linux import fdlimit
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
fdlimit.check_headroom(24)  # plenty free
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
for fd in held[:10]:
    os.close(fd)
fdlimit.check_headroom(10)  # exactly 10 free
try:
    fdlimit.check_headroom(11)
except fdlimit.NoHeadroom as exc:
    assert exc.errno == 24 and exc.need == 11, exc
    fd = os.open("/dev/null", os.O_RDONLY)  # the check gave back what it took
    assert fd == held[0], (fd, held[0])
    print("ok")
"""


def test_check_headroom_is_exact_and_takes_nothing() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    assert out.stdout == "ok\n", out.stderr
