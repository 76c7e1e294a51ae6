"""Whether a file's timestamps can be trusted to show its next change (git's "racily clean"
rule), for the caches that skip a file or directory whose stamp has not moved.

A change made in the same timestamp tick as our look at a file can leave its mtime and ctime as
they were, so a stamp is trusted only once it was older than a window coarser than any file
system's timestamp granularity when we looked. ctime counts beside mtime: mtime can be put back
(`touch -d`, `cp -p`), ctime cannot, and every write or utime moves it.
"""

from __future__ import annotations

RACY_NS = 2_000_000_000  # coarser than any file system's timestamps we meet


def settled(mtime_ns: int, ctime_ns: int, looked_at_ns: int) -> bool:
    """Whether a file stamped (mtime_ns, ctime_ns) was past the racy window at looked_at_ns."""
    return looked_at_ns - max(mtime_ns, ctime_ns) > RACY_NS
