"""Per-unit user-namespace ranges through a real daemon: root inside is the unit's own base
uid outside, two units never share ids, and a unit keeps its block until its file is gone
(across restarts, reload and kill -9 of the daemon). The units ask for nothing: a user
namespace of their own is the default."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon_kit import Daemon
from tests.support.images import build_busybox, requires_image_tools
from tests.support.requires import requires_root
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.root, requires_root]

CTL = [sys.executable, "-m", "supervisor.cli.main"]
BLOCK = 65536
# Five blocks; a host user's subordinate ids take the second (and the end of the first).
POOL_FIRST, POOL_LAST = 16 * BLOCK, 21 * BLOCK - 1
SUBUID = f"# a comment\nalice:{17 * BLOCK - 10}:{BLOCK}\n"
USERNS = ""  # nothing to ask: a user namespace of its own is the default (issue 27)
EXPLICIT = '[sandbox]\nnamespaces = ["pid", "mount", "uts", "ipc", "net", "cgroup", "user"]\n'
SHOW = (
    '[service]\nexec = ["/bin/sh", "-c", "echo uid=$(id -u); cat /proc/self/uid_map; '
    'exec sleep 1000"]\nstop_timeout = "500ms"\n'
)


def ctl(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SANDBOXD_SOCKET": str(d.socket)}
    return subprocess.run(
        [*CTL, *args], env=env, text=True, capture_output=True, check=False, timeout=60
    )


def _configure(d: Daemon) -> None:
    (d.base / "subuid").write_text(SUBUID)
    d.config.write_text(
        f'userns_pool = "{POOL_FIRST}-{POOL_LAST}"\nsubuid_file = "{d.base / "subuid"}"\n'
        f'subgid_file = "{d.base / "no-subgid"}"\n'
    )


def _range(d: Daemon, name: str) -> tuple[int, int]:
    shown = d.unit(name)["userns"]
    first, last = (int(x) for x in shown.split("-"))
    return first, last


def _host_uids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


def test_root_inside_is_the_units_own_base_uid_on_the_host(daemon: Daemon) -> None:
    _configure(daemon)
    daemon.write_unit("a", SHOW + USERNS)
    daemon.write_unit("b", SHOW + EXPLICIT)  # the same, asked for
    daemon.start()
    ranges = {}
    for name in ("a", "b"):
        unit = daemon.wait_unit(name, lambda u: u["state"] == "running")
        first, last = ranges[name] = _range(daemon, name)
        assert last - first + 1 == BLOCK and first % BLOCK == 0
        assert first >= POOL_FIRST and last <= POOL_LAST
        # alice's ids run from 17*BLOCK-10: the first block's tail and the second block.
        assert first >= 18 * BLOCK, (name, first)
        # On the host, the sandbox's PID 1 (root inside) is the unit's base uid, not 0.
        assert _host_uids(unit["pid"]) == [first] * 4
        # The echo and the cat's uid_map line are two writes: wait for both.
        wait_for(lambda n=name: len(daemon.output(n).split()) >= 4, 30,
                 lambda n=name: daemon.output(n))  # fmt: skip
        assert daemon.output(name).split()[:4] == ["uid=0", "0", str(first), str(BLOCK)]
    assert ranges["a"][1] < ranges["b"][0] or ranges["b"][1] < ranges["a"][0], ranges
    skipped = daemon.events("daemon.userns_pool_skipped")
    assert skipped and "alice" in str(skipped[0]["skipped"]), skipped
    text = ctl(daemon, "status", "a")
    shown = [line.split() for line in text.stdout.splitlines() if "userns:" in line]
    assert shown == [["userns:", f"{ranges['a'][0]}-{ranges['a'][1]}"]], text


def test_a_unit_keeps_its_range_until_its_file_is_removed(daemon: Daemon) -> None:
    _configure(daemon)
    daemon.write_unit("keep", SHOW + USERNS)
    daemon.start()
    first = daemon.wait_unit("keep", lambda u: u["state"] == "running")
    picked = _range(daemon, "keep")
    assert ctl(daemon, "restart", "keep").returncode == 0
    again = daemon.wait_unit("keep", lambda u: u["state"] == "running")
    assert again["pid"] != first["pid"] and _range(daemon, "keep") == picked
    # A new unit beside it, and a reload: each keeps its own block.
    daemon.write_unit("other", SHOW + USERNS)
    assert ctl(daemon, "reload").returncode == 0
    daemon.wait_unit("other", lambda u: u["state"] == "running")
    other = _range(daemon, "other")
    assert _range(daemon, "keep") == picked and other != picked
    # kill -9 of the daemon: the next one re-adopts the run and shows the same range, and a
    # restart under it launches with that range.
    daemon.wait_recorded()
    daemon.kill9()
    daemon.start()
    daemon.wait_unit("keep", lambda u: u["state"] == "running" and u["pid"] == again["pid"])
    assert _range(daemon, "keep") == picked and _range(daemon, "other") == other
    assert ctl(daemon, "restart", "keep").returncode == 0
    third = daemon.wait_unit("keep", lambda u: u["state"] == "running")
    assert _host_uids(third["pid"])[0] == picked[0]
    # Removed (stopped first: a run still stopping keeps its block until it has ended), the
    # block goes to the next unit that needs one.
    assert ctl(daemon, "stop", "keep").returncode == 0
    daemon.remove_unit("keep")
    assert ctl(daemon, "reload").returncode == 0
    daemon.write_unit("newcomer", SHOW + USERNS)
    assert ctl(daemon, "reload").returncode == 0
    daemon.wait_unit("newcomer", lambda u: u["state"] == "running")
    assert _range(daemon, "newcomer") == picked
    assert [e["unit"] for e in daemon.events("unit.userns_released")] == ["keep"]


def test_a_picked_unit_survives_sigterm_restart_of_the_daemon(daemon: Daemon) -> None:
    _configure(daemon)
    daemon.write_unit("calm", SHOW + USERNS)
    daemon.start()
    daemon.wait_unit("calm", lambda u: u["state"] == "running")
    picked = _range(daemon, "calm")
    daemon.signal(signal.SIGTERM)
    assert daemon.proc is not None and daemon.proc.wait(60) == 0
    daemon.start()
    unit = daemon.wait_unit("calm", lambda u: u["state"] == "running")
    assert _range(daemon, "calm") == picked and _host_uids(unit["pid"])[0] == picked[0]


def test_exec_enters_as_the_units_own_ids(daemon: Daemon) -> None:
    # A service that drops to nobody is the base uid + 65534 on the host; `sandboxctl exec`
    # enters as that user of the unit's namespace, not as a host uid.
    _configure(daemon)
    daemon.write_unit(
        "dropped",
        '[service]\nexec = ["/bin/sleep", "1000"]\nuser = "nobody"\nstop_timeout = "500ms"\n'
        + USERNS,
    )
    daemon.start()
    unit = daemon.wait_unit("dropped", lambda u: u["state"] == "running")
    first, _ = _range(daemon, "dropped")
    assert _host_uids(unit["pid"]) == [first + 65534] * 4
    seen = ctl(daemon, "exec", "dropped", "--", "/bin/sh", "-c", "id -u; cat /proc/self/uid_map")
    assert seen.returncode == 0, seen
    assert seen.stdout.split() == ["65534", "0", str(first), str(BLOCK)], seen


def test_an_explicit_range_is_used_and_an_overlapping_one_refused_at_reload(
    daemon: Daemon,
) -> None:
    _configure(daemon)
    daemon.write_unit("picked", SHOW + USERNS)
    daemon.write_unit("pinned", SHOW + "[sandbox]\nuser_namespace = { base = 3000000 }\n")
    daemon.start()
    pinned = daemon.wait_unit("pinned", lambda u: u["state"] == "running")
    assert _range(daemon, "pinned") == (3000000, 3000000 + BLOCK - 1)
    assert _host_uids(pinned["pid"])[0] == 3000000
    daemon.wait_unit("picked", lambda u: u["state"] == "running")
    taken, _ = _range(daemon, "picked")
    # One over the pinned range, one over the picked block: both refused, naming file and key.
    daemon.write_unit("over", SHOW + "[sandbox]\nuser_namespace = { base = 3065535, size = 2 }\n")
    daemon.write_unit("steal", SHOW + f"[sandbox]\nuser_namespace = {{ base = {taken + 5} }}\n")
    ctl(daemon, "reload")  # exits 1: there are invalid units
    for name, holder in (("over", "pinned"), ("steal", "picked")):
        unit = daemon.wait_unit(name, lambda u: u["state"] == "invalid")
        assert f"{daemon.units}/{name}.toml:" in unit["error"], unit
        assert "sandbox.user_namespace: " in unit["error"], unit
        assert f'overlaps the range of unit "{holder}"' in unit["error"], unit
    assert _range(daemon, "picked") == (taken, taken + BLOCK - 1)
    assert daemon.unit("pinned")["state"] == "running" and daemon.unit("pinned")["error"] is None


def test_an_explicit_namespaces_list_without_user_keeps_host_ids(daemon: Daemon) -> None:
    _configure(daemon)
    daemon.write_unit("hostids", SHOW + '[sandbox]\nnamespaces = ["pid", "mount", "net"]\n')
    daemon.write_unit("optout", SHOW + '[sandbox]\nuser_namespace = "host"\n')
    daemon.start()
    for name in ("hostids", "optout"):
        unit = daemon.wait_unit(name, lambda u: u["state"] == "running")
        assert daemon.unit(name)["userns"] is None
        assert _host_uids(unit["pid"]) == [0] * 4  # the weaker opt-out: root is the host's
        assert os.readlink(f"/proc/{unit['pid']}/ns/user") == os.readlink("/proc/self/ns/user")


NAMESPACES = '["pid", "mount", "uts", "ipc", "net", "cgroup", "user"]'


@pytest.mark.cgroup_v2
def test_a_notify_unit_in_its_user_namespace_becomes_running(daemon: Daemon) -> None:
    # The socket's directory sits under the daemon's 0700 notify dir: the launcher, still
    # host root, holds it for PID 1 (sandbox/host/holdplan.py).
    _configure(daemon)
    daemon.write_unit(
        "ready",
        '[service]\nexec = ["/bin/sh", "-c", "systemd-notify --ready; exec sleep 1000"]\n'
        'ready = "notify"\nstop_timeout = "300ms"\n' + USERNS,
    )
    daemon.start()
    daemon.wait_unit("ready", lambda u: u["state"] == "running")
    # The daemon's directories were not opened up for it.
    assert (daemon.state / "notify").stat().st_mode & 0o777 == 0o700
    assert daemon.stop() == 0


@pytest.mark.cgroup_v2
def test_overlay_writes_are_owned_by_the_units_range_on_the_host(daemon: Daemon) -> None:
    _configure(daemon)
    daemon.write_unit(
        "cow",
        '[service]\nexec = ["/bin/sh", "-c", "echo mine > /usr/sbx-cow; '
        'echo owner=$(stat -c %u /usr/bin) id=$(id -u); exec sleep 1000"]\n'
        f'stop_timeout = "300ms"\n[sandbox]\nnamespaces = {NAMESPACES}\noverlay = true\n',
    )
    daemon.start()
    daemon.wait_unit("cow", lambda u: u["state"] == "running")
    wait_for(lambda: "owner=" in daemon.output("cow"), 30, lambda: daemon.output("cow"))
    assert "owner=0 id=0" in daemon.output("cow")
    first, _ = _range(daemon, "cow")
    written = daemon.data / "overlay" / "cow" / "upper" / "usr" / "sbx-cow"
    assert written.read_text() == "mine\n"
    assert (written.stat().st_uid, written.stat().st_gid) == (first, first)
    assert not Path("/usr/sbx-cow").exists()
    assert daemon.stop() == 0


@requires_image_tools
@pytest.mark.cgroup_v2
def test_an_image_unit_keeps_its_owners_in_its_user_namespace(
    daemon: Daemon, tmp_path: Path
) -> None:
    _configure(daemon)
    oci = build_busybox(tmp_path / "busybox", "1.0")
    script = (
        "echo home=$(stat -c %u /home/app) bin=$(stat -c %u /bin/busybox) id=$(id -u); "
        "echo w > /home/app/new; echo wrote=$?; exec sleep 1000"
    )
    daemon.write_unit(
        "img",
        f'[service]\nexec = ["/bin/sh", "-c", "{script}"]\nstop_timeout = "300ms"\n'
        f'[sandbox]\nimage = "{oci}"\nread_only = false\nnamespaces = {NAMESPACES}\n',
    )
    daemon.start()
    daemon.wait_unit("img", lambda u: u["state"] == "running")
    wait_for(lambda: "wrote=" in daemon.output("img"), 60, lambda: daemon.output("img"))
    # The image's User is app (1000): its home is 1000 inside, busybox root's.
    assert "home=1000 bin=0 id=1000" in daemon.output("img"), daemon.output("img")
    assert "wrote=0" in daemon.output("img")
    first, _ = _range(daemon, "img")
    written = daemon.data / "overlay" / "img" / "upper" / "home" / "app" / "new"
    assert written.stat().st_uid == first + 1000
    # The shared layer store keeps the image's own ids.
    homes = list((daemon.data / "images" / "layers").glob("*/home/app"))
    assert homes and all(h.stat().st_uid == 1000 for h in homes)
    assert daemon.stop() == 0
