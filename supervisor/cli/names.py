"""The contract's names that sandboxctl compares with, as plain strings.

supervisor/contract.py declares them as enums, and `enum` (with the functools and collections
it imports) was ~5 ms of every sandboxctl call (issue 23), over half of a daemon-only verb's
own imports; the API speaks these strings anyway. They never change (the contract only adds),
and tests/unit/test_contract.py fails if one here differs from contract.py's.
"""

from __future__ import annotations

# State: a unit's state.
STARTING = "starting"
RUNNING = "running"
STOPPING = "stopping"
STOPPED = "stopped"
EXITED = "exited"
BACKOFF = "backoff"
FAILED = "failed"
INVALID = "invalid"

# How a run ended: ExitReason's one the client tells apart, and the patterns' prefixes.
OOM_KILLED = "oom-killed"
EXIT_CODE = "exit-code:"
SIGNAL = "signal:"
LAUNCH_ERROR = "launch-error:"
