"""The C heap's free pages given back to the kernel (glibc's malloc_trim).

Why: glibc returns freed memory to the kernel only from the top of its heap. The temporaries
of a start storm or a reload (plans, encoded messages, parsed files: everything above pymalloc's
512 bytes, and pymalloc's own arenas are elsewhere) are freed below long-lived objects, so their
pages stay resident in the daemon until malloc_trim(0) walks the heap and releases every free
page (madvise). A few ms on a daemon's heap; the daemon asks for it after a GC compaction
(gcpolicy.compact), which has just freed what it will ever free of a storm.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

_trim: list[Callable[[int], int] | None] = []  # resolved at the first call: [] not yet


def trim() -> bool:
    """Release the C heap's free pages; True if any went back. False where the C library has
    no malloc_trim (musl): nothing to do there, its free() already unmaps."""
    if not _trim:
        _trim.append(getattr(ctypes.CDLL(None), "malloc_trim", None))
    fn = _trim[0]
    return fn is not None and bool(fn(0))
