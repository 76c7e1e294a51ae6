"""A read-only host root: one read-only skeleton per distinct content (its mount points, the
system trees' links and /etc's snapshot), shared by every sandbox as its root
(sandbox/host/etcsnap.py), with the unit's own hostname and hosts bound over it.

What a sandbox sees must be what it saw when each one had its own copies: the host's files
byte for byte, root-owned, read-only, its own hostname; and no sandbox (root inside, with or
without a user namespace) can write or remount what its neighbours read. Launched as the daemon
does (directly and through a fork server); no mount is left on the host.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.sandbox.host import etcsnap
from supervisor.unit.schema import DEFAULT_CAPABILITIES
from tests.support import harness

pytestmark = harness.LAUNCH_MARKS

launch_path = harness.launch_path

USERNS = ["pid", "mount", "uts", "ipc", "net", "cgroup", "user"]
NO_USERNS = [ns for ns in USERNS if ns != "user"]
FILES = ("passwd", "group", "nsswitch.conf", "ld.so.cache", "services", "os-release")
# Each attempt prints its own verdict, so one that succeeds cannot hide behind another.
WRITES = (
    "echo x >> /etc/passwd 2>/dev/null && echo wrote-passwd; "
    "echo x >> /etc/hostname 2>/dev/null && echo wrote-hostname; "
    "echo x >> /etc/hosts 2>/dev/null && echo wrote-hosts; "
    "touch /etc/new 2>/dev/null && echo made-file; "
    "rm /etc/group 2>/dev/null && echo removed-group; "
    "mount -o remount,bind,rw /etc 2>/dev/null && echo remounted; "
    "umount /etc 2>/dev/null && echo unmounted; "
    "touch /new 2>/dev/null && echo made-root-file; "
    "mkdir /newdir 2>/dev/null && echo made-root-dir; "
    "ln -s /etc /link 2>/dev/null && echo made-root-link; "
    "rmdir /tmp 2>/dev/null && echo removed-mount-point; "
    "mount -o remount,bind,rw / 2>/dev/null && echo remounted-root; "
    "mount -o remount,rw / 2>/dev/null && echo remounted-root-superblock; "
    "echo x > /etc/passwd 2>/dev/null && echo wrote-passwd-after; echo done"
)
# With CAP_SYS_ADMIN in its own user namespace and no seccomp filter, root inside can mount
# (shown by a tmpfs in /tmp); the skeleton its neighbours share stays read-only all the same:
# the launcher held it read-only, and the copy of that mount PID 1 got locks the flag.
SYS_ADMIN = [*DEFAULT_CAPABILITIES, "SYS_ADMIN"]
CAN_MOUNT = "mkdir -p /tmp/m && mount -t tmpfs t /tmp/m && echo can-mount; "


def ours() -> list[str]:
    # The host's mounts this module could leave: of a snapshot, or on a staging directory
    # (other engineers' daemons add and remove their own meanwhile).
    return [m for m in harness.mountinfo() if harness.ETC_DIR in m or " /mnt" in m]


@pytest.fixture(scope="module", autouse=True)
def _host_untouched() -> Iterator[None]:
    harness.set_subreaper()
    before = ours()
    yield
    assert ours() == before, "a test left a mount on the host"


def digests(names: tuple[str, ...]) -> list[str]:
    return [hashlib.sha256(Path("/etc", n).read_bytes()).hexdigest() for n in names]


def run(
    script: str, namespaces: list[str], hostname: str, capabilities: list[str] | None = None
) -> str:
    spec = harness.unit(
        ["/bin/sh", "-c", script],
        name=hostname,
        sandbox={"namespaces": namespaces},
        # The worst case: the capabilities asked for, and no seccomp filter to refuse mounts.
        security={"capabilities": capabilities, "seccomp": "unconfined"} if capabilities else {},
    )
    res = harness.run(spec, id_map=(0, 6 << 20, 65536) if "user" in namespaces else None)
    assert res.exit_code == 0, res.stderr
    return res.stdout.decode()


@pytest.mark.parametrize("namespaces", [USERNS, NO_USERNS], ids=["userns", "host-ids"])
def test_etc_shows_the_hosts_files_root_owned_and_the_units_own_name(namespaces: list[str]) -> None:
    names = tuple(n for n in FILES if os.path.isfile(f"/etc/{n}"))
    out = run(
        f"cd /etc && sha256sum {' '.join(names)} | cut -d' ' -f1; "
        "stat -c %u:%g:%a /etc /etc/passwd /etc/hostname; cat /etc/hostname; "
        "grep -c viewer-a /etc/hosts; readlink /etc/localtime || echo no-link",
        namespaces,
        "viewer-a",
    )
    lines = out.split()
    assert lines[: len(names)] == digests(names)
    assert lines[len(names) : len(names) + 3] == ["0:0:755", "0:0:644", "0:0:644"]
    assert lines[len(names) + 3 : len(names) + 5] == ["viewer-a", "1"]
    link = os.readlink("/etc/localtime") if os.path.islink("/etc/localtime") else "no-link"
    assert lines[-1] == link


@pytest.mark.parametrize("namespaces", [USERNS, NO_USERNS], ids=["userns", "host-ids"])
def test_root_inside_cannot_write_or_remount_the_etc_its_neighbours_share(
    namespaces: list[str],
) -> None:
    snapshots = Path(harness.ETC_DIR)
    first = run(WRITES, namespaces, "writer")
    assert first.split() == ["done"], first
    made = {p.name: digests_of(p) for p in snapshots.iterdir()}
    # A neighbour of the same content binds the same snapshot, untouched by the first.
    second = run(WRITES + "; cat /etc/hostname", namespaces, "neighbour")
    assert second.split() == ["done", "neighbour"], second
    assert {p.name: digests_of(p) for p in snapshots.iterdir()} == made


def test_root_with_cap_sys_admin_in_its_user_namespace_cannot_remount_the_shared_root() -> None:
    snapshots = Path(harness.ETC_DIR)
    run("true", USERNS, "first-admin")
    made = {p.name: digests_of(p) for p in snapshots.iterdir()}
    out = run(CAN_MOUNT + WRITES, USERNS, "admin", capabilities=SYS_ADMIN)
    assert out.split() == ["can-mount", "done"], out
    assert {p.name: digests_of(p) for p in snapshots.iterdir()} == made


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody")
def test_an_unprivileged_host_user_cannot_reach_the_shared_root() -> None:
    run("true", USERNS, "reached")
    snapshots = Path(harness.ETC_DIR)
    (skeleton,) = [p for p in snapshots.iterdir() if (p / "etc" / "passwd").exists()][:1]
    assert stat.S_IMODE(snapshots.stat().st_mode) == 0o700
    for argv in (
        ["/bin/ls", str(snapshots)],
        ["/bin/ls", str(skeleton)],
        ["/usr/bin/touch", str(skeleton / "etc" / "passwd")],
        ["/bin/mkdir", str(skeleton / "planted")],
    ):
        nobody = subprocess.run(
            argv, user=65534, group=65534, extra_groups=[], capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert nobody.returncode != 0 and "Permission denied" in nobody.stderr, argv


def digests_of(snapshot: Path) -> dict[str, str]:
    """Every file of a root skeleton (its /etc copies included) and every name in it."""
    return {
        str(p.relative_to(snapshot)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file() and not p.is_symlink()
        else "-"
        for p in snapshot.rglob("*")
    }


def test_snapshots_no_sandbox_shows_are_swept_and_the_next_start_makes_its_own() -> None:
    # Content-addressed: starts with the same content share one snapshot.
    before = set(os.listdir(harness.ETC_DIR)) if os.path.isdir(harness.ETC_DIR) else set()
    run("true", USERNS, "first")
    current = set(os.listdir(harness.ETC_DIR))
    assert len(current - before) <= 1
    # Nothing runs with the older ones now: a sweep past RECENT keeps only what plans named
    # lately, and what a mount namespace still shows.
    for path in list(etcsnap._planned):
        if os.path.dirname(path) == harness.ETC_DIR:
            etcsnap._planned[path] -= etcsnap.RECENT + 1
    assert set(etcsnap.sweep(harness.ETC_DIR)) == current
    # Swept, so the next start writes its snapshot afresh, and sees the same /etc.
    out = run("cat /etc/hostname; sha256sum /etc/passwd | cut -d' ' -f1", USERNS, "again")
    assert out.split() == ["again", *digests(("passwd",))]
    assert len(os.listdir(harness.ETC_DIR)) == 1
