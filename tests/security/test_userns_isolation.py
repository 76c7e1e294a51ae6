"""Root in a sandbox with a user namespace is not root on the host, nor in another sandbox.

Every unit gets a user namespace and host ids of its own by default (unit/userns.py): its root
is an unprivileged uid outside, whose capabilities cover only files its own namespace maps. So
a host file only root may read stays unreadable when bound in, a root-owned file bound
writable stays unwritable (as if the service had escaped its mount view), a file one sandbox
writes into a directory two sandboxes share cannot be read, changed or removed by the other's
root, and one sandbox's processes cannot signal or trace another's.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kit import cgroup_version, uname
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(cgroup_version() == 0, reason="needs a cgroup filesystem"),
]
USERNS = "[sandbox]\n"  # nothing to ask: a user namespace of its own is the default


def unit(script: str, *mounts: str) -> str:
    text = f'[service]\nexec = ["/bin/sh", "-c", "{script}"]\nstop_timeout = "300ms"\n'
    text += '[restart]\npolicy = "no"\n' + USERNS
    return text + f"mounts = [{', '.join(mounts)}]\n"


@pytest.fixture
def host_dir() -> Iterator[Path]:
    # Any uid may enter it: a sandbox's root (its unit's base uid) looks bind sources up.
    where = Path(tempfile.mkdtemp(prefix="sbx-userns-"))
    where.chmod(0o755)
    yield where
    shutil.rmtree(where)


def test_a_root_only_host_file_is_unreadable_for_root_inside(
    sdaemons: Callable[[], Any], host_dir: Path
) -> None:
    secret = host_dir / "secret"
    secret.write_text("root only\n")
    secret.chmod(0o600)
    daemon = sdaemons()
    name = uname(daemon, "reader")
    script = "id -u; cat /srv/secret; echo rc=$?; chmod 644 /srv/secret; echo chmod=$?"
    daemon.write_unit(name, unit(script, f'{{ source = "{secret}", target = "/srv/secret" }}'))
    daemon.start()
    wait_for(lambda: "chmod=" in daemon.output(name), 60, lambda: daemon.output(name))
    out = daemon.output(name)
    assert out.startswith("0\n") and "Permission denied" in out and "rc=1" in out, out
    assert "root only" not in out and "chmod=1" in out, out
    assert secret.stat().st_mode & 0o777 == 0o600
    assert daemon.stop() == 0


def test_root_of_one_sandbox_cannot_touch_what_another_wrote(
    sdaemons: Callable[[], Any], host_dir: Path
) -> None:
    shared = host_dir / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # both sandboxes' roots may create files here, as on a shared /tmp
    bind = f'{{ source = "{shared}", target = "/shared", read_only = false }}'
    daemon = sdaemons()
    writer, thief = uname(daemon, "writer"), uname(daemon, "thief")
    daemon.write_unit(
        writer, unit("umask 077; echo mine > /shared/secret; echo wrote; exec sleep 1000", bind)
    )
    daemon.write_unit(
        thief,
        unit(
            "while [ ! -s /shared/secret ]; do sleep 0.05; done; "
            "cat /shared/secret; echo read=$?; chmod 666 /shared/secret; echo chmod=$?; "
            "rm -f /shared/secret; echo rm=$?; echo theirs > /shared/secret; echo write=$?",
            bind,
        ),
    )
    daemon.start()
    wait_for(lambda: "write=" in daemon.output(thief), 60, lambda: daemon.output(thief))
    out = daemon.output(thief)
    for step in ("read", "chmod", "rm"):
        assert f"{step}=1" in out, out
    assert "write=0" not in out and "write=" in out, out  # the shell's own status: 2
    assert out.count("Permission denied") + out.count("Operation not permitted") == 4, out
    assert "mine" not in out, out
    # On the host the file is the writer's base uid's (its root), untouched.
    owner = daemon.unit(writer)["userns"].split("-")[0]
    thief_base = daemon.unit(thief)["userns"].split("-")[0]
    assert owner != thief_base
    st = (shared / "secret").stat()
    assert (st.st_uid, st.st_mode & 0o777) == (int(owner), 0o600)
    assert (shared / "secret").read_text() == "mine\n"
    assert daemon.stop() == 0


def test_root_inside_with_cap_sys_admin_cannot_write_the_idmapped_host_trees(
    sdaemons: Callable[[], Any],
) -> None:
    # /usr is idmapped (root inside is the host's root for its files) and read-only: the
    # launcher set that before PID 1's mount namespace was copied, so the kernel locks it
    # there and not even CAP_SYS_ADMIN in the sandbox's namespace can make it writable. The
    # host's /etc is not idmapped: its private directories stay closed to root inside.
    text = unit(
        "id -u; stat -c owner=%u /usr/bin; "
        "mount -o remount,bind,rw /usr; echo remount=$?; "
        "mount --bind /usr /tmp; mount -o remount,bind,rw /tmp; echo rebind=$?; "
        "touch /usr/sbx-escape; echo touch=$?; "
        "ls /etc/ssl/private >/dev/null; echo private=$?; "
        "cat /etc/shadow; echo shadow=$?"
    ).replace(
        "[restart]", '[security]\ncapabilities = ["SYS_ADMIN", "DAC_OVERRIDE", "CHOWN"]\n[restart]'
    )
    daemon = sdaemons()
    name = uname(daemon, "admin")
    daemon.write_unit(name, text)
    daemon.start()
    wait_for(lambda: "shadow=" in daemon.output(name), 60, lambda: daemon.output(name))
    out = daemon.output(name)
    assert out.startswith("0\nowner=0\n"), out
    for step in ("remount", "rebind", "touch", "shadow"):
        assert f"{step}=0" not in out and f"{step}=" in out, out
    if os.path.isdir("/etc/ssl/private"):
        assert "private=0" not in out, out
    assert not os.path.exists("/usr/sbx-escape")
    assert daemon.stop() == 0


def test_a_root_owned_file_bound_writable_stays_unwritable_for_root_inside(
    sdaemons: Callable[[], Any], host_dir: Path
) -> None:
    # What a process that escaped its mount view would meet: a host file of root's, 0644. Root
    # inside is the unit's base uid outside, "other" to that file: no write, no chmod/chown.
    target = host_dir / "passwd-like"
    target.write_text("root:x:0:0\n")
    target.chmod(0o644)
    daemon = sdaemons()
    name = uname(daemon, "writer")
    script = (
        "id -u; cat /srv/f; echo extra >> /srv/f; echo write=$?; chmod 666 /srv/f; "
        "echo chmod=$?; chown 0:0 /srv/f; echo chown=$?"
    )
    bind = f'{{ source = "{target}", target = "/srv/f", read_only = false }}'
    daemon.write_unit(name, unit(script, bind))
    daemon.start()
    wait_for(lambda: "chown=" in daemon.output(name), 60, lambda: daemon.output(name))
    out = daemon.output(name)
    assert out.startswith("0\nroot:x:0:0\n"), out  # root inside, and it may read (0644)
    assert "write=0" not in out and "chmod=1" in out and "chown=1" in out, out
    assert target.read_text() == "root:x:0:0\n"
    st = target.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o644)
    assert daemon.stop() == 0


def _as_host_uid(uid: int, action: Callable[[], None]) -> int:
    """Run `action` in a child with `uid` for every uid and gid and no capabilities (what the
    kernel sees of a sandbox's root outside its namespace); its errno, or 0 if it succeeded."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        code = 0
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            action()
        except OSError as err:
            code = err.errno or 255
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_two_default_units_cannot_signal_or_trace_each_other(
    sdaemons: Callable[[], Any],
) -> None:
    # Were the pid namespaces shared, what stops root of one sandbox from killing or reading
    # another's processes is that their host uids differ (kill(2): same real or saved uid;
    # ptrace access: same uids, or CAP_SYS_PTRACE in the target's user namespace).
    daemon = sdaemons()
    a, b = uname(daemon, "a"), uname(daemon, "b")
    for name in (a, b):
        daemon.write_unit(name, unit("exec sleep 1000"))
    daemon.start()
    units = {n: daemon.wait_unit(n, lambda u: u["state"] == "running") for n in (a, b)}
    ranges = {n: [int(x) for x in daemon.unit(n)["userns"].split("-")] for n in (a, b)}
    assert ranges[a][1] < ranges[b][0] or ranges[b][1] < ranges[a][0], ranges
    for name in (a, b):  # on the host, each sandbox's root is its own base uid
        status = Path(f"/proc/{units[name]['pid']}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uids.split()[1:] == [str(ranges[name][0])] * 4, uids
    victim = units[b]["pid"]
    attacker = ranges[a][0]

    def kill() -> None:
        os.kill(victim, signal.SIGKILL)

    def trace() -> None:  # ptrace_may_access, as PTRACE_ATTACH checks it
        Path(f"/proc/{victim}/environ").read_bytes()

    def probe() -> None:  # signal 0: the permission check alone
        os.kill(victim, 0)

    assert _as_host_uid(attacker, kill) == errno.EPERM
    assert _as_host_uid(attacker, trace) == errno.EACCES
    # The victim's own uid passes the signal check: the test tells the two apart by uid.
    assert _as_host_uid(ranges[b][0], probe) == 0
    assert daemon.unit(b)["pid"] == victim and daemon.unit(b)["state"] == "running"
    assert daemon.stop() == 0
