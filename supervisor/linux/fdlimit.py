"""The daemon's file-descriptor limit, and what running out of descriptors looks like.

The daemon holds about four fds per running unit (pidfd, output pipe, OOM watch, log file),
and once a unit has been shown by `status` or `top` up to five more (its cgroup's view files,
kept open only while under half the limit, and given back for good once a launch finds
the fds short: cgroups/files.py's KeptFile), so it raises its soft
RLIMIT_NOFILE to the hard limit at start (`raise_soft_limit`). Should it
still run out, EMFILE (this process at its limit) or ENFILE (the whole host at fs.file-max)
may surface from any step of a launch: a pipe, a pidfd, a cgroup file, the fork server's
reply. `exhausted` finds it wherever it was raised, and `describe` says it in one line. Before
each launch `check_headroom` makes sure a reserve stays free, so that a daemon full of units
still answers its API instead of having every last fd taken by launches.
"""

from __future__ import annotations

import errno
import os
import resource

EXHAUSTED = (errno.EMFILE, errno.ENFILE)
# What must be free before a launch: what the launch itself opens at once (about 8: pipe,
# pidfd, fork server socket, cgroup files) and a reserve that launches never eat into, so
# that the control API can still accept connections and the running units can still open
# their log files when the daemon is full of units.
HEADROOM = 24


class NoHeadroom(OSError):
    """Fewer than `need` fds are free (errno EMFILE or ENFILE)."""

    def __init__(self, code: int, need: int) -> None:
        super().__init__(code, os.strerror(code))
        self.need = need


def raise_soft_limit() -> tuple[int, int]:
    """Set the soft RLIMIT_NOFILE to the hard one; (the soft limit before, the limit now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, hard


def check_headroom(need: int = HEADROOM) -> None:
    """NoHeadroom unless `need` more fds could be opened now: exact and cheap (2 x `need`
    syscalls, where counting /proc/self/fd costs ms with thousands open)."""
    held: list[int] = []
    try:
        held.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        while len(held) < need:
            held.append(os.dup(held[0]))  # close-on-exec, as every fd Python makes
    except OSError as exc:
        if exc.errno in EXHAUSTED:
            raise NoHeadroom(exc.errno, need) from None
        raise
    finally:
        for fd in held:
            os.close(fd)


def exhausted(exc: BaseException) -> int | None:
    """EMFILE or ENFILE if that is what `exc` (or an exception it was raised from, or an
    error it reports with an `errno` attribute, such as a launcher's LaunchError) comes from;
    else None."""
    seen: BaseException | None = exc
    for _ in range(8):  # a cause chain is short; a cycle must not loop forever
        if seen is None:
            return None
        code = getattr(seen, "errno", None)
        if code in EXHAUSTED:
            return int(code)
        seen = seen.__cause__ or seen.__context__
    return None


def describe(exc: BaseException, code: int) -> str:
    """`too many open files (...)`: which limit, and what would lift it."""
    short = (
        f"fewer than {exc.need} free, kept for launches and the API"
        if isinstance(exc, NoHeadroom)
        else "none free"
    )
    if code == errno.ENFILE:
        return f"too many open files in the system (ENFILE: {short}; fs.file-max is reached)"
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (
        f"too many open files (EMFILE: {short} of the daemon's limit of {soft}; "
        "raise LimitNOFILE= or run fewer units)"
    )
