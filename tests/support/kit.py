"""Shared by the reliability and security suites: real daemons and kernel-side views of what they
leave behind.

Daemons are the integration layer's `Daemon` (tests/integration/conftest.py: isolated dirs, a
socket under /tmp, a unique cgroup parent, teardown that asserts nothing is left), loaded here
under its own module name so that pytest's `conftest` modules are not disturbed.

Every unit these suites write carries `SBXREL=<cgroup parent>/<unit>` in its environment, so
the tests can find each sandbox's processes from the host whatever happened to the daemon or
the cgroups: `/proc/<pid>/environ` is the ground truth for "no sandbox runs twice, none is
orphaned".
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

from supervisor.linux import helduserns
from tests.support.daemon_kit import Daemon, pid_alive
from tests.support.daemon_kit import teardown as _teardown
from tests.support.requires import cgroup_version
from tests.support.waiting import poll, wait_for

__all__ = ["Daemon", "cgroup_version", "pid_alive", "poll", "wait_for"]

TESTS = Path(__file__).resolve().parents[1]
MARK = "SBXREL"
_serial = count()


def env_seconds(name: str, ci_default: float, local_default: float) -> float:
    """A duration from the environment; CI=true gets the full default, a laptop a shorter one."""
    value = os.environ.get(name)
    if value:
        return float(value)
    return ci_default if os.environ.get("CI", "").lower() in ("1", "true", "yes") else local_default


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


# -- daemons ---------------------------------------------------------------------------------


def new_daemon(prefix: str) -> Any:
    n = next(_serial)
    base = Path(tempfile.mkdtemp(prefix=f"sbx-{prefix}-{os.getpid()}-{n}-", dir="/tmp"))
    base.chmod(0o711)  # default units (their own host ids) reach bind sources here: daemon_kit
    daemon = Daemon(base, f"sandboxd-{prefix}-{os.getpid()}-{n}")
    daemon.tag = f"{os.getpid()}x{n}"
    return daemon


def uname(daemon: Any, stem: str) -> str:
    """A unit name unique on this host (`stem@<pid>x<n>`), so host-wide views (veth aliases,
    /run/netns) can never mistake another test's objects for ours."""
    return f"{stem}@{daemon.tag}"


@contextlib.contextmanager
def daemon_factory(prefix: str) -> Iterator[Callable[[], Any]]:
    """Like the integration `daemons` fixture (same teardown checks), with our own cgroup
    parent prefix and a check that no mount, netns or veth of ours is left on the host."""
    made: list[Any] = []

    def make() -> Any:
        made.append(new_daemon(prefix))
        return made[-1]

    problems: list[str] = []
    try:
        yield make
    finally:  # also when the block raised: its daemons and sandboxes must not outlive it
        for d in made:
            problems += _teardown(d)
            problems += [f"left on the host: {p}" for p in host_leaks(d)]
        for d in made:
            shutil.rmtree(d.base, ignore_errors=True)
    assert not problems, problems


def unit_text(exec_argv: list[str], daemon: Any, name: str, **sections: dict[str, object]) -> str:
    """A unit file whose service carries the SBXREL marker; JSON strings are TOML strings."""
    service: dict[str, object] = {"exec": exec_argv, "stop_timeout": "300ms"}
    service.update(sections.pop("service", {}))
    env = dict(service.pop("env", {}) or {})  # type: ignore[call-overload]
    env[MARK] = f"{daemon.cgroup_parent}/{name}"
    text = "[service]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in service.items())
    text += "env = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items()) + " }\n"
    for section, values in sections.items():
        text += f"[{section}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    return text


# -- kernel views ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pid1: bool  # PID 1 of its own PID namespace: a sandbox's main process
    zombie: bool


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # gone meanwhile, or a kernel thread
        return None


def _proc(pid: int) -> Proc | None:
    status = _read(f"/proc/{pid}/status")
    if status is None:
        return None
    fields = dict(
        line.split(":", 1) for line in status.decode(errors="replace").splitlines() if ":" in line
    )
    nspid = fields.get("NSpid", "").split()
    return Proc(
        pid,
        int(fields.get("PPid", "0").strip() or 0),
        len(nspid) > 1 and nspid[-1] == "1",
        fields.get("State", "").strip().startswith("Z"),
    )


def marked_processes(daemon: Any) -> dict[str, list[Proc]]:
    """Every live process on the host whose environment names one of this daemon's units."""
    prefix = f"{MARK}={daemon.cgroup_parent}/".encode()
    found: dict[str, list[Proc]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        environ = _read(f"/proc/{entry}/environ")
        if not environ or prefix not in environ:
            continue
        for var in environ.split(b"\0"):
            if var.startswith(prefix):
                proc = _proc(int(entry))
                if proc is not None and not proc.zombie:
                    found.setdefault(var[len(prefix) :].decode(), []).append(proc)
                break
    return found


def pid1s(daemon: Any) -> dict[str, list[int]]:
    """Unit -> the live PID 1s carrying its marker (more than one = the sandbox runs twice)."""
    return {
        unit: sorted(p.pid for p in procs if p.pid1)
        for unit, procs in marked_processes(daemon).items()
        if any(p.pid1 for p in procs)
    }


def unit_cgroups(daemon: Any) -> dict[str, set[int]]:
    """Unit cgroup directory name -> the PIDs in it (all controllers, v1 or v2)."""
    found: dict[str, set[int]] = {}
    for parent in daemon.cgroup_dirs():
        if not parent.is_dir():
            continue
        for sub in parent.iterdir():
            if sub.is_dir():
                procs = _read(str(sub / "cgroup.procs"))
                found.setdefault(sub.name, set()).update(int(p) for p in (procs or b"").split())
    return found


def zombies_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = _proc(int(entry))
            if proc is not None and proc.zombie and proc.ppid == pid:
                found.append(proc.pid)
    return found


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    status = _read(f"/proc/{pid}/status") or b""
    for line in status.decode().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def held_userns(daemon: Any) -> set[str] | None:
    """The names of the user namespaces a running daemon rightly holds in its holder
    (linux/helduserns.py): one per range of a unit it has; None if it does not answer (every
    held one then counts as rightly held). Any other (a removed unit's) is a leak."""
    if daemon.proc is None or daemon.proc.poll() is not None:
        return set()
    names = set()
    try:
        for name in daemon.status():
            shown = daemon.unit(name).get("userns")
            if shown:
                first, last = (int(x) for x in shown.split("-"))
                names.add(os.path.basename(helduserns.path_for("", first, last - first + 1)))
    except (OSError, http.client.HTTPException, AssertionError, ValueError):
        return None
    return names


def holder_leaks(daemon: Any) -> list[str]:
    """The files in the daemon's holder of user namespaces that no unit of it owns, and the
    holder itself once the daemon has stopped."""
    directory = str(daemon.state / "userns")
    if not helduserns.is_holder(directory):
        return []
    rightly = held_userns(daemon)
    running = daemon.proc is not None and daemon.proc.poll() is None
    if not running:
        return [f"holder {helduserns.holder_path(directory)}"]
    if rightly is None:
        return []
    holder = helduserns.Holder.open(directory)
    try:
        return [f"held userns {name}" for name in holder.names() if name not in rightly]
    finally:
        holder.close()


def host_leaks(daemon: Any) -> list[str]:
    """Mounts (incl. nsfs netns handles) under this daemon's dirs, /run/netns entries and host
    veths (IFLA_IFALIAS "sandboxd:<unit>") naming its units, and its marked processes."""
    leaks: list[str] = []
    tokens = (str(daemon.base), daemon.cgroup_parent)
    leaks += holder_leaks(daemon)
    holder = helduserns.holder_path(str(daemon.state / "userns"))
    for line in (_read("/proc/self/mountinfo") or b"").decode().splitlines():
        if any(t in line for t in tokens) and line.split()[4] != holder:
            leaks.append(f"mount {line.split()[4]}")
    netns = Path("/run/netns")
    if netns.is_dir():
        leaks += [f"netns {p}" for p in netns.iterdir() if daemon.cgroup_parent in p.name]
    units = {p.stem for p in daemon.units.glob("*.toml")} | set(marked_processes(daemon))
    for link in Path("/sys/class/net").iterdir():
        alias = (_read(str(link / "ifalias")) or b"").decode().strip()
        if alias.startswith("sandboxd:") and alias.removeprefix("sandboxd:") in units:
            # Unit names in these suites carry a per-test token, so this is ours.
            leaks.append(f"veth {link.name} ({alias})")
    leaks += [f"process {u}: {[p.pid for p in ps]}" for u, ps in marked_processes(daemon).items()]
    return leaks
