"""Fault injection: SIGKILL the daemon at random points of reload, start, stop and restart
storms, restart it, and check that the kernel agrees with the unit files.

Each iteration (seeded: SANDBOXD_FAULT_SEED, SANDBOXD_FAULT_ITERATIONS, default 50) runs a storm
of control calls and unit-file edits from a thread and SIGKILLs the daemon after a random delay.
The next daemon re-adopts from its state dir; once it has settled:
  * every unit with a file is in the state its file (and the operator's completed start/stop
    calls) says; the one call that was in flight when the daemon died may have happened or not;
  * each running unit has exactly one sandbox PID 1 on the host (found by the SBXREL marker in
    /proc/<pid>/environ, not by asking the daemon) and it is the PID the daemon reports;
  * no sandbox process exists for a stopped or removed unit (none orphaned), no cgroup
    directory for a unit that does not run (a restarting unit's next cgroup, made ahead and
    empty, excepted), no zombie under the daemon, and no mount, netns or veth of this daemon on
    the host.
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from supervisor.cgroups import SPARE_PREFIX, owner_of
from tests.support.kit import (
    cgroup_version,
    env_int,
    host_leaks,
    marked_processes,
    pid1s,
    poll,
    uname,
    unit_cgroups,
    unit_text,
    zombies_of,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]

SEED = env_int("SANDBOXD_FAULT_SEED", 20261123)
ITERATIONS = env_int("SANDBOXD_FAULT_ITERATIONS", 50)
SETTLE_TIMEOUT = 60.0
MAX_UNITS = 9
SETTLED = frozenset({"running", "stopped"})

Op = tuple[str, ...]  # ("reload",) ("sighup",) ("start", unit) ("write", unit, "7") ...


@dataclass
class Model:
    """What the files and the operator's completed calls say each unit should be doing."""

    files: dict[str, tuple[bool, int, int]] = field(default_factory=dict)  # autostart, v, mem
    operator: dict[str, str] = field(default_factory=dict)  # "stopped" | "started"
    serial: int = 0

    def expected(self, name: str) -> str:
        op = self.operator.get(name)
        if op is not None:
            return "running" if op == "started" else "stopped"
        return "running" if self.files[name][0] else "stopped"

    def apply(self, op: Op) -> None:
        match op:
            case ("start" | "restart", name) if name in self.files:
                self.operator[name] = "started"
            case ("stop", name) if name in self.files:
                self.operator[name] = "stopped"
            case ("write", name, new_variant):
                autostart, _old, mem = self.files[name]
                self.files[name] = (autostart, int(new_variant), mem)
            case ("resources", name, new_mem):
                autostart, variant, _old = self.files[name]
                self.files[name] = (autostart, variant, int(new_mem))
            case ("add", name, autostart):
                self.files[name] = (autostart == "1", 0, 64)
                self.operator.pop(name, None)
            case ("remove", name):
                del self.files[name]
                self.operator.pop(name, None)


def write_file(daemon: Any, model: Model, name: str) -> None:
    autostart, variant, mem = model.files[name]
    daemon.write_unit(
        name,
        unit_text(
            ["/bin/sleep", str(100000 + variant)], daemon, name,
            service={"autostart": autostart},
            resources={"memory_max": f"{mem}M", "pids_max": 64},
            restart={"delay": "50ms", "burst": 10000, "interval": "1s"},
        ),
    )  # fmt: skip


def storm(rng: random.Random, model: Model, daemon: Any) -> list[Op]:
    """A batch of operations of one kind (or mixed): the order a real operator might send."""
    kind = rng.choice(["reload", "start", "stop", "restart", "mixed"])
    names = sorted(model.files)
    ops: list[Op] = []
    files = set(names)
    for _ in range(rng.randint(6, 14)):
        k = kind if kind != "mixed" else rng.choice(["reload", "start", "stop", "restart"])
        if k == "reload":
            edit = rng.choice(["write", "resources", "add", "remove", "none"])
            live = sorted(files)
            if edit == "add" and len(files) < MAX_UNITS:
                model.serial += 1
                name = uname(daemon, f"n{model.serial}")
                ops.append(("add", name, rng.choice("110")))
                files.add(name)
            elif edit == "remove" and len(files) > 3:
                name = rng.choice(live)
                ops.append(("remove", name))
                files.discard(name)
            elif edit == "write":
                ops.append(("write", rng.choice(live), str(rng.randint(1, 999))))
            elif edit == "resources":
                ops.append(("resources", rng.choice(live), str(rng.choice([48, 64, 96, 128]))))
            ops.append(rng.choice([("reload",), ("reload",), ("sighup",)]))
        else:
            ops.append((k, rng.choice(sorted(files))))
    return ops


class Storm(threading.Thread):
    """Runs the ops in order; stops at the first failed call (the daemon is gone)."""

    def __init__(self, daemon: Any, model: Model, ops: list[Op]) -> None:
        super().__init__(daemon=True)
        self.d, self.model, self.ops = daemon, model, ops
        self.done: list[Op] = []
        self.inflight: Op | None = None
        self.error: str | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        shadow = Model(dict(self.model.files), dict(self.model.operator), self.model.serial)
        for op in self.ops:
            if self.halt.is_set():
                return
            self.inflight = op
            try:
                effective = self._do(op, shadow)
            except (OSError, http.client.HTTPException):
                return  # killed mid-call: stays in flight
            except AssertionError as exc:
                self.error = str(exc)
                return
            if effective:
                shadow.apply(op)
                self.done.append(op)
            self.inflight = None

    def _do(self, op: Op, shadow: Model) -> bool:
        """Perform one op; False if the daemon answered that it did nothing (404: a unit
        whose file a SIGHUP reload has not picked up yet)."""
        match op:
            case ("reload",):
                self.d.request("POST", "/v1/reload")
            case ("sighup",):
                self.d.signal(signal.SIGHUP)
                time.sleep(0.05)
            case ("start" | "stop" | "restart", name):
                code, body = self.d.request("POST", f"/v1/units/{name}/{op[0]}")
                if code == 404:
                    return False
                if code != 200:
                    raise AssertionError(f"{op}: {code} {body}")
            case ("add" | "write" | "resources", name, *_):
                shadow.apply(op)
                write_file(self.d, shadow, name)
            case ("remove", name):
                self.d.remove_unit(name)
        return True


@dataclass
class Check:
    problems: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.problems.append(message)


def verify(daemon: Any, model: Model, allowed: dict[str, set[str]]) -> list[str]:
    """Everything the module docstring promises, as a list of problems (empty = good)."""
    check = Check()
    status = daemon.status()
    if set(status) != set(model.files):
        check.fail(f"units {sorted(status)} but files {sorted(model.files)}")
    sandboxes = pid1s(daemon)
    everything = marked_processes(daemon)
    cgroups = unit_cgroups(daemon)
    # A restarting unit's next cgroup, made ahead (engine/nextcgroup.py): empty, and only for
    # a unit that exists. An ended run's renamed cgroup (`.gone.`) is a leak once settled.
    for spare in [n for n in cgroups if n.startswith(SPARE_PREFIX)]:
        pids = cgroups.pop(spare)
        if owner_of(spare) not in model.files:
            check.fail(f"{spare}: spare cgroup of a removed unit left")
        if pids:
            check.fail(f"{spare}: spare cgroup holds {sorted(pids)}")
    for name in sorted(set(model.files) | set(status) | set(everything) | set(cgroups)):
        u = status.get(name, {})
        state = u.get("state")
        want = allowed.get(name, {model.expected(name)}) if name in model.files else {None}
        if state not in want:
            check.fail(f"{name}: state {state} (last exit {u.get('last_exit')}), want {want}")
        running = sandboxes.get(name, [])
        if state == "running":
            if running != [u["pid"]]:
                check.fail(f"{name}: daemon says pid {u['pid']}, host has PID 1s {running}")
        elif name in everything:
            pids = [p.pid for p in everything[name]]
            check.fail(f"{name} ({state}): orphaned sandbox processes {pids}")
        if cgroups.get(name) and state != "running":
            check.fail(f"{name} ({state}): cgroup still holds {sorted(cgroups[name])}")
        if name in cgroups and name not in model.files:
            check.fail(f"{name}: cgroup of a removed unit left")
    assert daemon.proc is not None
    zombies = zombies_of(daemon.proc.pid)
    if zombies:
        check.fail(f"zombies under the daemon: {zombies}")
    leaks = [leak for leak in host_leaks(daemon) if not leak.startswith("process ")]
    check.problems += leaks
    return check.problems


def settle(daemon: Any, model: Model, allowed: dict[str, set[str]]) -> list[str]:
    problems: list[str] = []

    def ok() -> bool:
        nonlocal problems
        try:
            problems = verify(daemon, model, allowed)
        except (OSError, http.client.HTTPException, AssertionError) as exc:
            problems = [f"status unavailable: {exc!r}"]
        return not problems

    poll(ok, SETTLE_TIMEOUT, interval=0.1)
    return problems


@dataclass
class Injector:
    """One daemon, its model, and what the kills have hit so far."""

    daemon: Any
    rng: random.Random
    model: Model = field(default_factory=Model)
    interrupted: int = 0
    kills: list[tuple[int, float, Op | None, int]] = field(default_factory=list)

    def iteration(self, i: int) -> None:
        daemon, model, rng = self.daemon, self.model, self.rng
        ops = storm(rng, model, daemon)
        delay = rng.uniform(0.0, 0.3) if rng.random() < 0.5 else rng.uniform(0.3, 1.5)
        worker = Storm(daemon, model, ops)
        worker.start()
        time.sleep(delay)
        daemon.kill9()
        worker.halt.set()
        worker.join(60)
        assert not worker.is_alive(), f"iteration {i}: storm thread hung"
        assert worker.error is None, f"iteration {i}: {worker.error}"
        before = {n: model.expected(n) for n in model.files}
        for op in worker.done:
            model.apply(op)
        allowed = self.allowed_after(worker.inflight)
        # File edits never fail half-way (the thread only stops at a failed call).
        assert {p.stem for p in daemon.units.glob("*.toml")} == set(model.files)
        self.kills.append((i, delay, worker.inflight, len(worker.done)))
        daemon.start()
        problems = settle(daemon, model, allowed)
        context = (
            f"iteration {i} (seed {SEED}): killed after {delay:.3f}s, {len(worker.done)}/"
            f"{len(ops)} ops done, in flight {worker.inflight}; states before {before}"
        )
        assert not problems, f"{context}\n" + "\n".join(problems)
        # Learn how the ambiguous units ended, so the next iteration's expectations are exact.
        status = daemon.status()
        for name, states in allowed.items():
            if len(states) > 1:
                state = status[name]["state"]
                model.operator[name] = "started" if state == "running" else "stopped"

    def allowed_after(self, inflight: Op | None) -> dict[str, set[str]]:
        """Units whose end state is ambiguous, with the states they may be in."""
        model, allowed = self.model, dict[str, set[str]]()
        if inflight is not None:
            self.interrupted += 1
            if inflight[0] in ("start", "stop", "restart") and inflight[1] in model.files:
                after = Model(dict(model.files), dict(model.operator))
                after.apply(inflight)
                name = inflight[1]
                allowed[name] = {model.expected(name), after.expected(name)}
        return allowed


def test_sigkill_during_storms(rdaemons: Callable[[], Any]) -> None:
    daemon = rdaemons()
    daemon.config.write_text('log_max_size = "64K"\nlog_keep = 1\n')
    injector = Injector(daemon, random.Random(SEED))
    for i in range(6):
        name = uname(daemon, f"u{i}")
        injector.model.files[name] = (i < 4, 0, 64)
        write_file(daemon, injector.model, name)
    daemon.start()
    problems = settle(daemon, injector.model, {})
    assert not problems, problems
    for i in range(ITERATIONS):
        injector.iteration(i)
    print(f"\n{ITERATIONS} SIGKILLs (seed {SEED}), {injector.interrupted} in the middle of a call")
    assert injector.interrupted >= ITERATIONS // 4, injector.kills  # kills hit the storms
    assert daemon.stop() == 0
