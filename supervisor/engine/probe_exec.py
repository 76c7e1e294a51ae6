"""The `exec = [...]` health probe: a command run inside the sandbox, in a sub-cgroup.

The command is entered into the sandbox exactly as `sandboxctl exec` does it (PID 1's
namespaces, root, cwd, uid/gid, capabilities, no_new_privs, seccomp, environment), except for
its cgroup: it joins a *probe sub-cgroup* below the unit's (`UnitCgroup.subgroup`). So it
counts against the unit's limits, and the whole tree it may spawn (double forks, `setsid`,
daemons) can be killed without touching the service. A process group or a walk of /proc
children would miss whatever re-parented itself to the sandbox's PID 1; cgroup membership is
inherited and cannot be left without privileges the probe does not have.

Who runs the command is the `Prober` port (engine/ports.py; the fork server, so the daemon
never forks). Here: make the sub-cgroup, start the job, wait for its report, kill whatever is
left in the sub-cgroup once the report is in, and judge the outcome. On `close()` (the run
ends) the sub-cgroup is killed and removed, which also ends a probe still running.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

from supervisor.cgroups import Subgroup, UnitCgroup
from supervisor.engine.ports import ProbeJob, ProbeOutcome, Prober
from supervisor.engine.probes import ProbeResult, truncate
from supervisor.errors import CgroupError, ProbeStartError
from supervisor.log import get_logger

log = get_logger()
SUBGROUP = "sandboxd-probe"
# The command is killed at `timeout`; past this much more, something is stuck (an unkillable
# command, a fork server too busy to answer): give up on the report.
REPORT_GRACE = 5.0


class ExecProbe:
    def __init__(
        self,
        unit: str,
        pid: int,
        argv: Sequence[str],
        *,
        cgroup: UnitCgroup | None,
        prober: Prober | None,
    ) -> None:
        self.unit, self.pid, self.argv = unit, pid, list(argv)
        self._unit_cgroup, self._prober = cgroup, prober
        self._cgroup: Subgroup | None = None
        self._job: ProbeJob | None = None

    async def run(self, timeout: float) -> ProbeResult:
        try:
            job = self._job = self._start(timeout)
        except ProbeStartError as exc:
            return ProbeResult(False, truncate(f"exec: cannot start: {exc}"))
        except (OSError, CgroupError) as exc:
            return ProbeResult(False, truncate(f"exec: cannot start: {exc}"))
        try:
            reported = await job.reported(timeout + REPORT_GRACE)
        finally:
            self._finish(job)
        outcome = job.finish()
        if not reported:
            why = f"the probe did not end within {timeout + REPORT_GRACE:g}s, even killed"
            return ProbeResult(False, truncate(f"{why}; output: {outcome.output}"))
        if outcome.status is None:  # all said, no exit status: the fork server died meanwhile
            log.warning("health.probe_server_lost", unit=self.unit)
        return verdict(outcome, timeout)

    def _start(self, timeout: float) -> ProbeJob:
        if self._prober is None:
            raise ProbeStartError("exec probes need the daemon's fork server, and there is none")
        if self._unit_cgroup is None:
            raise ProbeStartError("the unit has no cgroup to run the probe in")
        if self._cgroup is None:
            self._cgroup = self._unit_cgroup.subgroup(SUBGROUP)
        return self._prober.start(self.unit, self.pid, self.argv, self._cgroup, timeout)

    def _finish(self, job: ProbeJob) -> None:
        """Kill what is left of the probe, then let the job release its pipes."""
        if self._job is not job:  # close() got there first
            return
        self._job = None
        if self._cgroup is not None:
            with contextlib.suppress(CgroupError, OSError):
                if self._cgroup.pids():
                    self._cgroup.kill_all()
        job.finish()

    def close(self) -> None:
        if self._job is not None:
            self._finish(self._job)
        if self._cgroup is not None:
            with contextlib.suppress(CgroupError, OSError):
                self._cgroup.destroy()
            self._cgroup = None


def verdict(outcome: ProbeOutcome, timeout: float) -> ProbeResult:
    text = outcome.output
    if outcome.status is None:
        return ProbeResult(
            False, truncate(f"exec: the fork server died while the probe ran; {text}")
        )
    if outcome.timed_out:
        why = f"timed out after {timeout:g}s, killed with its process tree"
        return ProbeResult(False, truncate(f"{why}; output: {text}"))
    code = os.waitstatus_to_exitcode(outcome.status)
    if code == 0:
        return ProbeResult(True, truncate(text))
    how = f"exit code {code}" if code >= 0 else f"signal {-code}"
    return ProbeResult(False, truncate(f"{how}: {text}" if text else how))
