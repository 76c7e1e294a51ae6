"""A unit's cgroups around a restart: the next run's made ahead, the ended run's removed after.

A run's cgroup is its own (its CPU, peak memory and I/O counters are the run's, which `top`
and the metrics rely on), so a restart cannot reuse the old one; but making one costs a
mkdir per hierarchy and every limit written (~1.5 to 2 ms on a quiet v1 host, several under
load), and removing one an rmdir per hierarchy after its processes are checked. Where cgroups
can be renamed (v1: `Manager.renames`), neither has to be on the restart's path:

* `retire`: the ended run's cgroup is renamed out of the unit's name (`.gone.<unit>.<n>`,
  naming.py) at once, and removed at `tidy`: once the next run has exec'd, or before the
  runner waits for anything.
* `prepare`: a unit that is restarting by its policy, or whose run was just OOM-killed, gets
  its next cgroup made ahead (`.next.<unit>`, limits written), empty; the next launch `take`s
  it by renaming it to the unit's name. It is kept while a restart may need it: until the
  unit settles (stopped, exited, failed), is removed or the daemon ends, or the current run
  has lasted `reset_after` (when the restart policy forgets the failures too). An empty
  memory cgroup costs the host some hundreds of KiB of slab (README, density), so a unit
  that never restarted never holds one.

A spare made with other limits than the launch's (a reload, a live update) is removed and the
cgroup made afresh. A daemon that dies holding either leaves it for the next one's start-up
sweep (Reconciler.resume), which removes every cgroup no re-adopted run lives in. On cgroup2
there is no rename: a run's cgroup is removed when it ends and the next one made at launch.
"""

from __future__ import annotations

import asyncio
import itertools

from supervisor.cgroups import Limits, Manager, UnitCgroup, retired_name, spare_name
from supervisor.engine.run import discard_cgroup
from supervisor.errors import CgroupError
from supervisor.log import get_logger

log = get_logger()
_serial = itertools.count(1)  # retired names are unique within a daemon's life


class NextCgroup:
    """One unit's spare and retired cgroups (see the module docstring)."""

    def __init__(self, unit: str, cgroups: Manager, loop: asyncio.AbstractEventLoop) -> None:
        self.unit, self._cgroups, self._loop = unit, cgroups, loop
        self._spare: tuple[UnitCgroup, Limits] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._retired: list[UnitCgroup] = []

    @property
    def spare(self) -> UnitCgroup | None:
        return None if self._spare is None else self._spare[0]

    @property
    def retired(self) -> int:
        """Ended runs' cgroups not removed yet."""
        return len(self._retired)

    def retire(self, cgroup: UnitCgroup) -> None:
        """The ended run's `cgroup` leaves the unit's name now (removed by `tidy`); where it
        cannot be renamed, it is removed now."""
        if self._cgroups.renames:
            try:
                name = retired_name(self.unit, next(_serial))
                self._retired.append(self._cgroups.rename(cgroup, name))
                return
            except CgroupError as exc:
                log.warning("unit.cgroup_rename_failed", unit=self.unit, error=str(exc))
        discard_cgroup(cgroup, self.unit)

    def tidy(self) -> None:
        """Remove the retired cgroups (their processes killed first, if any are left)."""
        while self._retired:
            discard_cgroup(self._retired.pop(), self.unit)

    def prepare(self, limits: Limits, keep_for: float) -> None:
        """Have the next run's cgroup made with `limits`, for `keep_for` seconds from now."""
        if not self._cgroups.renames:
            return
        if self._spare is not None and self._spare[1] != limits:
            self.drop()
        if self._spare is None:
            try:
                cgroup = self._cgroups.create(spare_name(self.unit), limits)
            except CgroupError as exc:
                # Nothing lost: the launch makes the cgroup itself, and says so if it fails.
                log.warning("unit.cgroup_spare_failed", unit=self.unit, error=str(exc))
                return
            self._spare = (cgroup, limits)
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = self._loop.call_later(keep_for, self.drop)

    def take(self, limits: Limits) -> UnitCgroup | None:
        """The spare under the unit's name, if it was made with `limits` (else it is removed);
        None: the launch makes the cgroup itself."""
        spare = self._spare
        self._forget_spare()
        if spare is None:
            return None
        cgroup, made_with = spare
        if made_with != limits:
            discard_cgroup(cgroup, self.unit)
            return None
        try:
            return self._cgroups.rename(cgroup, self.unit)
        except CgroupError as exc:
            # The unit's name is still taken (a cgroup that could not be removed): the launch
            # deals with that leftover as without a spare.
            log.warning("unit.cgroup_rename_failed", unit=self.unit, error=str(exc))
            discard_cgroup(cgroup, self.unit)
            return None

    def hand_over(self, limits: Limits) -> UnitCgroup | None:
        """The spare, still under its own name, if it was made with `limits`: for a launch
        begun while the unit's name still belongs to the ending run (prelaunch.py). Its
        caller's from here: `to_unit` renames it once that run's cgroup is retired."""
        spare = self._spare
        if spare is None or spare[1] != limits:
            return None
        self._forget_spare()
        return spare[0]

    def to_unit(self, cgroup: UnitCgroup) -> UnitCgroup:
        """`cgroup` under the unit's name (CgroupError if that is still taken)."""
        return self._cgroups.rename(cgroup, self.unit)

    def drop(self) -> None:
        """No restart is near: the spare goes."""
        spare = self._spare
        self._forget_spare()
        if spare is not None:
            discard_cgroup(spare[0], self.unit)

    def close(self) -> None:
        """The runner ends: nothing is kept."""
        self.drop()
        self.tidy()

    def _forget_spare(self) -> None:
        self._spare = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
