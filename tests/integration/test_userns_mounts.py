"""Everything that mounts, inside a user namespace: the launcher holds the host sources (idmapped
where the plan says so, sandbox/host/holdplan.py) and PID 1, the unit's mapped root, binds them.

Launched through `supervisor.sandbox.host.launch` as the daemon does (directly and through a
fork server); the module fixture checks that no mount is left on the host.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.errors import LaunchError
from supervisor.sandbox.host.launch import ExtraBind
from tests.support import harness

pytestmark = harness.LAUNCH_MARKS

launch_path = harness.launch_path

USERNS = ["pid", "mount", "uts", "ipc", "net", "cgroup", "user"]
BASE = 5 << 20
IDS = (0, BASE, 65536)


@pytest.fixture(scope="module", autouse=True)
def _host_untouched() -> Iterator[None]:
    harness.set_subreaper()
    before = harness.mountinfo()
    yield
    assert harness.mountinfo() == before, "a test left a mount on the host"


def run(script: str, **kw: object) -> harness.Run:
    overlay_dir = kw.pop("overlay_dir", None)
    extra_binds = kw.pop("extra_binds", None)
    spec = harness.unit(["/bin/sh", "-c", script], sandbox={"namespaces": USERNS, **kw})
    return harness.run(
        spec,
        id_map=IDS,
        overlay_dir=overlay_dir,  # type: ignore[arg-type]
        extra_binds=extra_binds,  # type: ignore[arg-type]
    )


def test_the_host_roots_system_trees_are_root_owned_inside() -> None:
    res = run(
        "stat -c %u /usr/bin /usr/bin/env; id -u; cat /proc/self/uid_map; "
        "touch /usr/x 2>/dev/null || echo usr-ro; cat /etc/shadow 2>/dev/null || echo no-shadow"
    )
    assert res.exit_code == 0, res.stderr
    assert res.stdout.decode().split() == [
        "0", "0", "0", "0", str(BASE), "65536", "usr-ro", "no-shadow"
    ], res.stderr  # fmt: skip


def test_host_etc_is_not_idmapped_so_its_private_dirs_stay_closed() -> None:
    # /etc/ssl/private is 0710 root:ssl-cert on Debian: an idmapped /etc would open it to
    # the sandbox's root; bound as it is, root inside is "other" there.
    if not os.path.isdir("/etc/ssl/private"):
        pytest.skip("no /etc/ssl/private on this host")
    res = run("stat -c %u /etc/ssl; ls /etc/ssl/private >/dev/null 2>&1 && echo open || echo shut")
    assert res.stdout.decode().split() == ["65534", "shut"], res.stderr


def test_overlay_upper_is_owned_by_the_mapped_ids(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    res = run(
        "echo cow > /usr/sbx-userns-probe && stat -c %u /usr/sbx-userns-probe /usr/bin",
        overlay=True,
        overlay_dir=str(overlay),
    )
    assert res.stdout.decode().split() == ["0", "0"], res.stderr
    assert not Path("/usr/sbx-userns-probe").exists()
    written = overlay / "upper/usr/sbx-userns-probe"
    assert written.read_text() == "cow\n"
    assert (written.stat().st_uid, written.stat().st_gid) == (BASE, BASE)
    assert overlay.stat().st_uid == BASE and stat.S_IMODE(overlay.stat().st_mode) == 0o700
    # The next run finds its own file (the upper is reused).
    again = run("cat /usr/sbx-userns-probe", overlay=True, overlay_dir=str(overlay))
    assert again.stdout == b"cow\n", again.stderr


def test_overlay_dir_behind_a_0700_directory(tmp_path: Path) -> None:
    # As in the daemon's data_dir: the mapped root cannot enter it, the launcher can.
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    res = run("echo x > /usr/sbx; cat /usr/sbx", overlay=True, overlay_dir=str(closed / "u"))
    assert res.stdout == b"x\n", res.stderr
    assert (closed / "u/upper/usr/sbx").stat().st_uid == BASE


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    where = tmp_path / "data"
    where.mkdir()
    (where / "owned-by-root").write_text("r\n")
    return where


def test_a_writable_bind_gets_the_mapped_ids(host_dir: Path) -> None:
    host_dir.chmod(0o777)  # root inside is "other" on a host-root-owned directory
    res = run(
        "echo w > /srv/data/new; stat -c %u /srv/data/owned-by-root",
        mounts=[{"source": str(host_dir), "target": "/srv/data", "read_only": False}],
    )
    assert res.stdout == b"65534\n", res.stderr
    assert (host_dir / "new").stat().st_uid == BASE


def test_idmap_host_bind_writes_with_host_ids(host_dir: Path) -> None:
    res = run(
        "echo w > /srv/data/new; stat -c %u /srv/data/owned-by-root",
        mounts=[
            {"source": str(host_dir), "target": "/srv/data", "read_only": False, "idmap": "host"}
        ],
    )
    assert res.stdout == b"0\n", res.stderr
    assert (host_dir / "new").stat().st_uid == 0


def test_read_only_binds_and_a_root_only_file(host_dir: Path) -> None:
    secret = host_dir / "secret"
    secret.write_text("root only\n")
    secret.chmod(0o600)
    res = run(
        "stat -c %u /srv/plain/owned-by-root /srv/mapped/owned-by-root; "
        "cat /srv/plain/secret 2>/dev/null || echo denied; "
        "touch /srv/mapped/x 2>/dev/null || echo ro",
        mounts=[
            {"source": str(host_dir), "target": "/srv/plain"},
            {"source": str(host_dir), "target": "/srv/mapped", "idmap": "host"},
        ],
    )
    assert res.stdout.decode().split() == ["65534", "0", "denied", "ro"], res.stderr


def test_a_directory_root_and_a_device(tmp_path: Path) -> None:
    if not os.path.exists("/usr/bin/busybox"):
        pytest.skip("busybox-static is not installed")
    root = tmp_path / "rootfs"
    for d in ("bin", "etc", "proc", "dev", "sys", "tmp", "run"):
        (root / d).mkdir(parents=True)
    shutil.copy("/usr/bin/busybox", root / "bin/busybox")
    for applet in ("sh", "stat", "echo", "test", "cat"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    res = run(
        "stat -c %u /bin/busybox; echo hi > /dev/null && echo null-ok; "
        "test -c /dev/net/tun && echo tun",
        root=str(root),
        devices=[{"path": "/dev/net/tun", "access": "rw"}],
    )
    assert res.stdout.decode().split() == ["0", "null-ok", "tun"], res.stderr


def test_a_daemon_bind_from_a_0700_directory(tmp_path: Path) -> None:
    # The notify socket's directory: under the daemon's 0700 run dir, bound in by the launcher.
    closed = tmp_path / "closed"
    (closed / "sock").mkdir(parents=True)
    closed.chmod(0o700)
    (closed / "sock").chmod(0o755)
    (closed / "sock/hello").write_text("hi\n")
    res = run("cat /run/sock/hello", extra_binds=[ExtraBind(str(closed / "sock"), "/run/sock")])
    assert res.stdout == b"hi\n", res.stderr


def test_a_filesystem_that_cannot_be_idmapped_is_a_clear_launch_error(tmp_path: Path) -> None:
    where = tmp_path / "ramfs"
    where.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(where)], check=True)
    try:
        with pytest.raises(LaunchError) as info:
            run("true", mounts=[{"source": str(where), "target": "/srv", "idmap": "host"}])
    finally:
        subprocess.run(["umount", str(where)], check=True)
    assert info.value.stage == "rootfs", info.value
    assert f"hold {where} (idmapped" in info.value.message, info.value.message
    assert "cannot be idmapped" in info.value.message, info.value.message


def test_nothing_held_leaks_into_the_service() -> None:
    script = (
        "import json, os; print(json.dumps(sorted(int(f) for f in os.listdir('/proc/self/fd'))))"
    )
    spec = harness.unit(["/usr/bin/python3", "-c", script], sandbox={"namespaces": USERNS})
    res = harness.run(spec, id_map=IDS)
    listed = json.loads(res.stdout)
    assert listed == [0, 1, 2, 3], (listed, res.stderr)  # 3: listdir's own


def test_a_symlink_in_a_bind_sources_path_is_refused(tmp_path: Path) -> None:
    # The launcher opens sources as the host's root: still without following a symlink, so a
    # sandbox that can write a shared directory cannot redirect a neighbour's bind to /etc.
    (tmp_path / "real/sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(LaunchError) as info:
        run("true", mounts=[{"source": str(tmp_path / "link/sub"), "target": "/srv"}])
    assert info.value.stage == "rootfs", info.value
    assert "has a symlink in its path" in info.value.message, info.value.message
