"""Operations cut in half (issue 29): the daemon is SIGKILLed in the middle of a launch, and the
next daemon cleans up exactly what belonged to that launch and nothing else.

The daemon freezes itself at a named point (supervisor/linux/faultpoint.py,
SANDBOXD_FAULT_STOP_AT), so the kill lands there and nowhere else: after the unit's cgroup was
made and before anything was forked; after the unit's veth was put on the bridge and before its
PID 1 got the go byte. A bystander unit, running through all of it, must keep its PID, its
cgroup, its veth and its address.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.images.oci import read_image
from supervisor.images.reference import parse_ref
from supervisor.linux import faultpoint
from supervisor.sandbox.host.network import veth_name
from tests.support.bridges import free_prefix, remove_bridge
from tests.support.images import build_busybox, requires_image_tools
from tests.support.kit import (
    cgroup_version,
    pid1s,
    uname,
    unit_cgroups,
    unit_text,
    wait_for,
)

pytestmark = [
    # The killed daemon's orphans (a half-made PID 1, the image helper) go to init, which reaps
    # them, not to a pytest that a launcher test left a subreaper.
    pytest.mark.usefixtures("not_a_subreaper"),
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]

SLEEP = ["/bin/sleep", "100000"]


def running(u: dict[str, Any]) -> bool:
    return u["state"] == "running"


def stopped(pid: int) -> bool:
    """The process froze itself at its fault point (SIGSTOP: state T)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def freeze_at(daemon: Any, point: str, unit: str) -> None:
    """Start `daemon` so that it stops itself at `point` for `unit`; return once it has."""
    daemon.start(wait_ready=False, env={faultpoint.ENV: f"{point}:{unit}"})
    wait_for(lambda: daemon.proc.poll() is not None or stopped(daemon.proc.pid), 90,
             lambda: daemon.stderr_path().read_text()[-2000:])  # fmt: skip
    assert daemon.proc.poll() is None, daemon.stderr_path().read_text()[-2000:]


def left_running(daemon: Any) -> tuple[str, str, dict[str, Any]]:
    """A bystander unit started, recorded, and left running by a SIGKILLed daemon, for the
    next daemons to re-adopt; (its name, a name for the victim, its status)."""
    calm, victim = uname(daemon, "calm"), uname(daemon, "victim")
    daemon.write_unit(calm, unit_text(SLEEP, daemon, calm))
    daemon.start()
    bystander = daemon.wait_unit(calm, running, 60)
    daemon.wait_recorded()
    daemon.kill9()
    return calm, victim, bystander


def test_a_launch_killed_after_its_cgroup_was_made(rdaemons: Callable[[], Any]) -> None:
    daemon = rdaemons()
    calm, victim, bystander = left_running(daemon)

    daemon.write_unit(victim, unit_text(SLEEP, daemon, victim))
    freeze_at(daemon, faultpoint.LAUNCH_CGROUP_CREATED, victim)
    assert unit_cgroups(daemon).get(victim) == set()  # made, and nothing forked into it
    daemon.kill9()

    daemon.start()
    launched = daemon.wait_unit(victim, running, 60)
    assert daemon.unit(calm)["pid"] == bystander["pid"]  # re-adopted, untouched
    assert pid1s(daemon) == {calm: [bystander["pid"]], victim: [launched["pid"]]}
    cgroups = unit_cgroups(daemon)
    assert sorted(cgroups) == sorted([calm, victim]), cgroups  # the same cgroup, reused
    assert launched["pid"] in cgroups[victim] and bystander["pid"] in cgroups[calm]
    assert not daemon.events("unit.leftover_killed")  # nothing was in it to kill
    assert "Traceback" not in daemon.stderr_path().read_text()
    assert daemon.stop() == 0


def test_a_launch_killed_after_its_cgroup_was_made_whose_file_then_went(
    rdaemons: Callable[[], Any],
) -> None:
    """The unit's file is removed while no daemon runs: no record names a run, no file names
    the unit, yet its half-made cgroup is there. The next daemon removes it (the fault storm
    found one left this way), and leaves the bystander's alone."""
    daemon = rdaemons()
    calm, victim, bystander = left_running(daemon)

    daemon.write_unit(victim, unit_text(SLEEP, daemon, victim))
    freeze_at(daemon, faultpoint.LAUNCH_CGROUP_CREATED, victim)
    assert unit_cgroups(daemon).get(victim) == set()
    daemon.kill9()
    daemon.remove_unit(victim)

    daemon.start()
    wait_for(lambda: victim not in unit_cgroups(daemon), 30, lambda: unit_cgroups(daemon))
    assert sorted(daemon.status()) == [calm]
    assert daemon.unit(calm)["pid"] == bystander["pid"]
    assert unit_cgroups(daemon) == {calm: unit_cgroups(daemon)[calm]}
    assert bystander["pid"] in unit_cgroups(daemon)[calm]
    assert "Traceback" not in daemon.stderr_path().read_text()
    assert daemon.stop() == 0


def test_a_half_made_sandbox_whose_file_then_went_is_killed_with_its_cgroup(
    rdaemons: Callable[[], Any],
) -> None:
    """As above, with the launcher's PID 1 already in the cgroup (waiting for its go byte)."""
    daemon = rdaemons()
    with own_bridge(daemon):
        victim = uname(daemon, "victim")
        daemon.write_unit(victim, unit_text(SLEEP, daemon, victim, network={"mode": "bridge"}))
        freeze_at(daemon, faultpoint.NETWORK_VETH_ATTACHED, victim)
        waiting = unit_cgroups(daemon)[victim]
        assert waiting
        daemon.kill9()
        daemon.remove_unit(victim)

        daemon.start()
        wait_for(lambda: victim not in unit_cgroups(daemon), 30, lambda: unit_cgroups(daemon))
        assert not any(alive(pid) for pid in waiting), waiting
        assert daemon.status() == {}
        assert "Traceback" not in daemon.stderr_path().read_text()
        assert daemon.stop() == 0


@contextlib.contextmanager
def own_bridge(daemon: Any) -> Iterator[str]:
    """A bridge and subnet for this daemon alone; deleted (with its rules table) at the end."""
    bridge = f"sbxr{os.getpid() % 1000}p{daemon.tag.rsplit('x', 1)[1]}"
    daemon.config.write_text(
        f'[network]\nbridge = "{bridge}"\nsubnet = "{free_prefix("10.202")}0/24"\n'
    )
    try:
        yield bridge
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        remove_bridge(bridge)


def ports(bridge: str) -> dict[str, int]:
    """The links on `bridge`: name -> ifindex."""
    found = {}
    for link in Path("/sys/class/net").iterdir():
        master = link / "master"
        if master.exists() and os.path.basename(os.readlink(master)) == bridge:
            found[link.name] = int((link / "ifindex").read_text())
    return found


def leases(daemon: Any) -> dict[str, str]:
    path = daemon.data / "network" / "leases.json"
    return dict(json.loads(path.read_text())["leases"])


@pytest.mark.skipif(cgroup_version() != 1, reason="cgroup2 has no rename: no cgroup made ahead")
def test_a_restarting_units_cgroup_made_ahead_is_swept_after_its_daemon_was_killed(
    rdaemons: Callable[[], Any],
) -> None:
    """A unit restarted by its policy keeps its next run's cgroup made ahead, empty
    (`.next.<unit>`, engine/nextcgroup.py), and the ended run's is gone; a daemon killed
    meanwhile leaves the spare to the next one, which re-adopts the run and removes it."""
    daemon = rdaemons()
    name = uname(daemon, "crashy")
    spare = f".next.{name}"
    daemon.write_unit(name, unit_text(SLEEP, daemon, name, restart={"delay": "0"}))
    daemon.start()
    first = daemon.wait_unit(name, running, 60)
    os.kill(first["pid"], signal.SIGKILL)  # our daemon's sandbox: a crash the policy restarts
    again = daemon.wait_unit(name, lambda u: running(u) and u["pid"] != first["pid"], 60)
    wait_for(lambda: sorted(unit_cgroups(daemon)) == sorted([name, spare]), 30,
             lambda: unit_cgroups(daemon))  # fmt: skip
    cgroups = unit_cgroups(daemon)
    assert cgroups[spare] == set() and again["pid"] in cgroups[name]
    daemon.wait_recorded()
    daemon.kill9()

    daemon.start()
    assert daemon.wait_unit(name, running, 60)["pid"] == again["pid"]  # re-adopted
    wait_for(lambda: sorted(unit_cgroups(daemon)) == [name], 30, lambda: unit_cgroups(daemon))
    assert pid1s(daemon) == {name: [again["pid"]]}
    assert "Traceback" not in daemon.stderr_path().read_text()
    assert daemon.stop() == 0


@pytest.mark.skipif(cgroup_version() != 1, reason="cgroup2 has no rename: no cgroup made ahead")
def test_a_crash_looping_unit_leaves_no_cgroup_behind_through_daemon_kills(
    rdaemons: Callable[[], Any],
) -> None:
    """The fault storm's services never end by themselves, so its kills never land inside a
    policy restart. Here they do, wherever they land: between an ended run's cgroup renamed
    away and removed, or with the next run's made ahead. Whatever each daemon left, the next
    one removes, and once the unit is gone no cgroup of it is left."""
    daemon = rdaemons()
    name = uname(daemon, "looper")
    daemon.write_unit(name, unit_text(
        ["/bin/sh", "-c", "sleep 0.05; exit 1"], daemon, name,
        restart={"delay": "0", "burst": 10000, "interval": "1s"},
    ))  # fmt: skip
    for _ in range(4):
        daemon.start()
        seen = daemon.unit(name)["restarts"]
        wait_for(lambda: daemon.unit(name)["restarts"] >= seen + 3, 60)  # noqa: B023
        daemon.kill9()
    daemon.start()
    seen = daemon.unit(name)["restarts"]
    wait_for(lambda: daemon.unit(name)["restarts"] >= seen + 3, 60)
    daemon.remove_unit(name)
    assert daemon.request("POST", "/v1/reload")[0] == 200
    wait_for(lambda: not unit_cgroups(daemon) and name not in daemon.status(), 30,
             lambda: unit_cgroups(daemon))  # fmt: skip
    assert not pid1s(daemon)
    assert "Traceback" not in daemon.stderr_path().read_text()
    assert daemon.stop() == 0


def test_a_network_attach_killed_after_the_veth_was_made(rdaemons: Callable[[], Any]) -> None:
    daemon = rdaemons()
    with own_bridge(daemon) as bridge:
        calm, victim = uname(daemon, "calm"), uname(daemon, "victim")
        net = {"network": {"mode": "bridge"}}
        daemon.write_unit(calm, unit_text(SLEEP, daemon, calm, **net))
        daemon.start()
        bystander = daemon.wait_unit(calm, running, 60)
        calm_port = ports(bridge)
        assert list(calm_port) == [veth_name(bridge, calm)]
        daemon.wait_recorded()
        daemon.kill9()

        daemon.write_unit(victim, unit_text(SLEEP, daemon, victim, **net))
        freeze_at(daemon, faultpoint.NETWORK_VETH_ATTACHED, victim)
        half = ports(bridge)
        assert sorted(half) == sorted([veth_name(bridge, calm), veth_name(bridge, victim)])
        address = leases(daemon)[victim]
        waiting = unit_cgroups(daemon)[victim]  # launcher's PID 1, waiting for the go byte
        assert waiting
        daemon.kill9()

        daemon.start()
        launched = daemon.wait_unit(victim, running, 60)
        # The half-made sandbox is gone; its lease is kept (the unit file is still there), so
        # the unit has the same address, as after any restart; its veth is a new one.
        assert not any(alive(pid) for pid in waiting), waiting
        assert leases(daemon) == {calm: leases(daemon)[calm], victim: address}
        now = ports(bridge)
        assert sorted(now) == sorted(half), now
        assert now[veth_name(bridge, calm)] == calm_port[veth_name(bridge, calm)]  # untouched
        assert daemon.unit(calm)["pid"] == bystander["pid"]
        assert pid1s(daemon) == {calm: [bystander["pid"]], victim: [launched["pid"]]}
        assert sorted(unit_cgroups(daemon)) == sorted([calm, victim])
        assert "Traceback" not in daemon.stderr_path().read_text()
        assert daemon.stop() == 0


def _stopped_helper(daemon: Any) -> int | None:
    """The daemon's image helper (`python -m supervisor.images`), once it froze itself."""
    children = Path(f"/proc/{daemon.proc.pid}/task/{daemon.proc.pid}/children")
    for pid in map(int, children.read_text().split()):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"supervisor.images" in argv and stopped(pid):
                return pid
    return None


@requires_image_tools
def test_an_image_unpack_killed_before_its_layer_was_renamed(
    rdaemons: Callable[[], Any], tmp_path: Path
) -> None:
    """The unpack helper is killed with the daemon after a layer is whole in the store's tmp/
    and before its rename: the next daemon's unpack removes the leftover, unpacks the layer
    again, keeps the layer that was already complete, and the bystander runs on."""
    ref = build_busybox(tmp_path / "busybox")
    bottom, top = (layer.diff_id for layer in read_image(parse_ref(ref)).layers)
    daemon = rdaemons()
    calm, victim, bystander = left_running(daemon)

    store = daemon.data / "images"
    daemon.write_unit(victim, unit_text(SLEEP, daemon, victim, sandbox={"image": ref}))
    daemon.start(wait_ready=False, env={faultpoint.ENV: f"{faultpoint.IMAGE_LAYER_UNPACKED}:{top}"})
    wait_for(lambda: _stopped_helper(daemon) is not None, 120,
             lambda: daemon.stderr_path().read_text()[-2000:])  # fmt: skip
    helper = _stopped_helper(daemon)
    assert helper is not None
    half = list((store / "tmp").iterdir())
    assert len(half) == 1 and half[0].name.startswith(top[7:19]), half
    stored = {p.name: p.stat().st_ino for p in (store / "layers").iterdir()}
    assert list(stored) == [bottom.removeprefix("sha256:")]
    daemon.kill9()
    os.kill(helper, signal.SIGKILL)  # our daemon's child, by PID
    wait_for(lambda: not alive(helper), 30)

    daemon.start()
    launched = daemon.wait_unit(victim, running, 120)
    assert list((store / "tmp").iterdir()) == []
    now = {p.name: p.stat().st_ino for p in (store / "layers").iterdir()}
    assert sorted(now) == sorted([bottom.removeprefix("sha256:"), top.removeprefix("sha256:")])
    assert now[bottom.removeprefix("sha256:")] == stored[bottom.removeprefix("sha256:")]
    assert daemon.unit(calm)["pid"] == bystander["pid"]
    assert pid1s(daemon) == {calm: [bystander["pid"]], victim: [launched["pid"]]}
    assert "Traceback" not in daemon.stderr_path().read_text()
    assert daemon.stop() == 0
