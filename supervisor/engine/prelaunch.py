"""The next run of an OOM-killed unit, launched while the kernel tears the old one down.

From an OOM kill to PID 1's exit being seen the kernel takes 10 to 15 ms (it frees the
victim's memory first); the restart after that exit spent most of its ~13 ms launching: the
fork server's spare, the launcher, PID 1 building its root. So at the OOM event the runner
begins the next launch (run.Begun) in the unit's spare cgroup (`.next.<unit>`,
nextcgroup.py) and PID 1 builds its whole sandbox, then waits for Go (a read on its go pipe
with no deadline). Only once the old run's exit has been seen, its cgroup renamed away and
the restart policy has restarted the unit does the runner rename the spare to the unit's
name and send Go: two runs of a unit never exec at once.

Only where nothing of the two sandboxes can collide while both exist (`eligible`): no
[[listen]] sockets (bound once, held by the unit), no bridge network (the next run's veth
has the old one's name), `ready = "started"` without a watchdog (no notify socket), a
restart with delay 0 (a delay hides the launch anyway), and cgroup v1, where the spare can be
renamed (`Manager.renames`). Hostname (per UTS namespace), the held user namespace (shared
on purpose) and the output pipes (each launch has its own, into the same log) do not collide.

A begun launch is aborted (PID 1 killed and reaped, its cgroup removed, its fds closed) as
soon as the unit heads anywhere but to that restart: any state but RUNNING, BACKOFF and
STARTING (a stop, an OOM kill of another process that PID 1 survives: STOPPING; policy
verdicts exited/failed), a changed spec at the launch, and the runner's end. A daemon killed
meanwhile closes the go pipe's only write end: PID 1 reads EOF and exits without exec, and
the next daemon's start-up sweep removes the `.next.<unit>` cgroup, which no record names.
"""

from __future__ import annotations

from collections.abc import Callable

from supervisor.cgroups import Limits, UnitCgroup
from supervisor.engine.output import RotatingLog
from supervisor.engine.restarttrace import LAUNCH_BEGUN, OFF, RestartTrace
from supervisor.engine.run import Begun, Host
from supervisor.errors import CgroupError
from supervisor.log import get_logger
from supervisor.unit.spec import UnitSpec

log = get_logger()


def eligible(spec: UnitSpec, renames: bool) -> bool:
    """Whether an OOM kill of a run of `spec` may begin its next launch at once (see the
    module docstring); `renames`: the host's cgroups can be renamed (v1)."""
    unit = spec.unit
    return (
        renames
        and unit.oom.policy == "restart"
        and unit.restart.policy != "no"
        and unit.restart.delay == 0
        and not unit.listen
        and unit.network.mode != "bridge"
        and unit.service.ready == "started"
        and not unit.service.watchdog
    )


async def begin(host: Host, spec: UnitSpec, sink: RotatingLog, cgroup: UnitCgroup) -> Begun:
    """Launch `spec` into `cgroup` (the spare, under its own name) up to its Go. Raises as
    Run.launch does, leaving nothing."""
    trace = RestartTrace() if host.trace_restarts else OFF
    trace.mark(LAUNCH_BEGUN)

    def spare(limits: Limits) -> UnitCgroup:  # made with them: NextCgroup.hand_over
        return cgroup

    if host.launch_slots is None:
        return await Begun.begin(host, spec, sink, trace, prepared=spare)
    async with host.launch_slots.held():
        return await Begun.begin(host, spec, sink, trace, prepared=spare)


def take(begun: Begun, spec: UnitSpec, rename: Callable[[UnitCgroup], UnitCgroup]) -> Begun | None:
    """`begun` ready for its Go as a launch of `spec`: its cgroup renamed to the unit's name
    (the old run's is gone from it by now). None, after aborting it, if it was begun for
    another spec or the rename fails: the caller launches afresh."""
    if begun.spec is not spec:
        begun.abort()
        return None
    try:
        begun.cgroup = rename(begun.cgroup)
    except CgroupError as exc:
        log.warning("unit.cgroup_rename_failed", unit=spec.name, error=str(exc))
        begun.abort()
        return None
    return begun
