"""Each sandboxctl verb's one-line help, in the order `sandboxctl --help` lists them.

Declared here rather than in the verb's module (which takes its own from here, for its parser):
`--help`, an unknown verb and a missing one list every verb with this line alone, without
importing the 14 modules (main._modules).
"""

from __future__ import annotations

HELP: dict[str, str] = {
    "status": "show units: state, pid, uptime, restarts, memory, last exit",
    "top": "show every unit's cpu, memory, pids, I/O and memory pressure, refreshed",
    "reload": "re-read every unit file, reconcile (like SIGHUP) and wait for what it started",
    "start": "start units; a failed unit is reset and started",
    "stop": "stop units: stop_signal, then SIGKILL to the whole cgroup after stop_timeout",
    "restart": "restart units (stop, then start with the current unit file)",
    "run": "run a command as a transient unit (no unit file), optionally waiting for it",
    "logs": "print a unit's output (stdout and stderr, as captured in log_dir/<unit>.log)",
    "events": (
        "print unit events (started, exited, oom-kill, ...) as they happen, after recent ones"
    ),
    "exec": (
        "run a command inside a running unit's sandbox (namespaces, cgroup, user, caps, seccomp)"
    ),
    "validate": "check unit files offline (no daemon needed)",
    "images": "list the images units run from, or prune the layers no unit uses",
    "cat": "print a unit's files (template, drop-ins) and, with --effective, the merged unit",
    "fleet": "the fleet's desired and reported state in etcd: status, apply, diff",
}
