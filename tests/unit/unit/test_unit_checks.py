"""Host checks: what cannot work on this host is a warning naming the key, never an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.linux import resolvconf
from supervisor.unit.checks import host_warnings
from supervisor.unit.loader import load_unit
from tests.support.images import add_file, tar_bytes, write_layout


def warnings_for(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "u.toml"
    path.write_text('[service]\nexec = ["/bin/true"]\n' + text)
    return [str(w) for w in host_warnings(load_unit(path))]


def test_a_device_that_is_not_a_device_node(tmp_path: Path) -> None:
    found = warnings_for(tmp_path, '[sandbox]\ndevices = [{ path = "/dev/shm" }]\n')
    assert found == [
        f"{tmp_path}/u.toml: sandbox.devices[0].path: warning: /dev/shm is not a device node "
        "on this host (not a character or block device)"
    ]


def test_a_missing_device(tmp_path: Path) -> None:
    found = warnings_for(tmp_path, '[sandbox]\ndevices = [{ path = "/dev/nope" }]\n')
    assert found == [
        f"{tmp_path}/u.toml: sandbox.devices[0].path: warning: "
        "/dev/nope does not exist on this host"
    ]


def test_a_real_device_passes(tmp_path: Path) -> None:
    assert warnings_for(tmp_path, '[sandbox]\ndevices = [{ path = "/dev/null" }]\n') == []


def test_cpus_not_online_are_named(tmp_path: Path) -> None:
    with open("/sys/devices/system/cpu/online") as f:
        online = f.read().strip()
    found = warnings_for(tmp_path, '[resources]\ncpus = "0,4095"\n')
    assert found == [
        f"{tmp_path}/u.toml: resources.cpus: warning: cpus '0,4095': CPU 4095 not online on "
        f"this host (online: {online})"
    ]
    assert warnings_for(tmp_path, '[resources]\ncpus = "0"\n') == []


# --- a root directory: exec[0], user and group as the sandbox will see them --------------------


def rootfs(tmp_path: Path) -> Path:
    """A small rootfs: /bin -> usr/bin (as merged-/usr distributions have it), an absolute
    alternatives-style link, a non-executable file, and passwd/group naming `app`."""
    root = tmp_path / "rootfs"
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "bin").symlink_to("usr/bin")
    (root / "usr/bin/busybox").write_bytes(b"\x7fELF")
    (root / "usr/bin/busybox").chmod(0o755)
    (root / "usr/bin/sh").symlink_to("/usr/bin/busybox")  # absolute: inside the rootfs
    (root / "usr/bin/data").write_text("not a program")
    (root / "usr/bin/escape").symlink_to("../../../../../../bin/true")  # .. stops at the root
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\napp:x:1000:\n")
    return root


def unit_in(root: Path, exec0: str, service: str = "") -> str:
    return f'[service]\nexec = ["{exec0}"]\n{service}[sandbox]\nroot = "{root}"\n'


def rootfs_warnings(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "u.toml"
    path.write_text(text)
    return [str(w).removeprefix(f"{path}: ") for w in host_warnings(load_unit(path))]


def test_exec_resolves_through_the_rootfs_own_symlinks(tmp_path: Path) -> None:
    root = rootfs(tmp_path)
    for exec0 in ("/bin/sh", "/usr/bin/sh", "/bin/busybox", "/usr/bin/../bin/busybox"):
        assert rootfs_warnings(tmp_path, unit_in(root, exec0)) == [], exec0


def test_exec_missing_or_not_executable_in_the_rootfs(tmp_path: Path) -> None:
    root = rootfs(tmp_path)
    expected = {
        "/bin/bash": f"/bin/bash does not exist in the root directory {root}",
        "/usr/bin/data": f"/usr/bin/data is not executable in the root directory {root}",
        "/usr": f"/usr is not a regular file in the root directory {root}",
        # The host has /bin/true; a link climbing out of the rootfs must not find it.
        "/bin/escape": f"/bin/escape does not exist in the root directory {root}",
    }
    for exec0, problem in expected.items():
        assert rootfs_warnings(tmp_path, unit_in(root, exec0)) == [
            f"service.exec[0]: warning: {problem}: the unit will fail to start"
        ], exec0


def test_user_and_group_must_be_in_the_rootfs(tmp_path: Path) -> None:
    root = rootfs(tmp_path)
    ok = ['user = "app"\n', 'user = "app"\ngroup = "app"\n', 'user = "4242"\n', 'user = "root"\n']
    for service in ok:
        assert rootfs_warnings(tmp_path, unit_in(root, "/bin/sh", service)) == [], service
    assert rootfs_warnings(tmp_path, unit_in(root, "/bin/sh", 'user = "www"\n')) == [
        f"service.user: warning: unknown user 'www': not in {root}/etc/passwd: "
        "the unit will fail to start"
    ]
    assert rootfs_warnings(tmp_path, unit_in(root, "/bin/sh", 'group = "staff"\n')) == [
        f"service.group: warning: unknown group 'staff': not in {root}/etc/group: "
        "the unit will fail to start"
    ]


def test_a_rootfs_without_passwd_runs_root_and_numeric_ids_only(tmp_path: Path) -> None:
    root = rootfs(tmp_path)
    (root / "etc/passwd").unlink()
    assert rootfs_warnings(tmp_path, unit_in(root, "/bin/sh")) == []
    assert rootfs_warnings(tmp_path, unit_in(root, "/bin/sh", 'user = "1000"\n')) == []
    assert rootfs_warnings(tmp_path, unit_in(root, "/bin/sh", 'user = "app"\n')) == [
        f"service.user: warning: unknown user 'app': not in {root}/etc/passwd (there is no "
        "passwd file): the unit will fail to start"
    ]


def test_a_passwd_link_out_of_the_rootfs_is_read_inside_it(tmp_path: Path) -> None:
    # /etc/passwd -> /etc/passwd.real means the rootfs's file, never the host's.
    root = rootfs(tmp_path)
    (root / "etc/passwd").rename(root / "etc/passwd.real")
    (root / "etc/passwd").symlink_to("/etc/passwd.real")
    assert rootfs_warnings(tmp_path, unit_in(root, "/bin/sh", 'user = "app"\n')) == []
    (root / "etc/passwd.real").write_text("root:x:0:0::/root:/bin/sh\n")
    [warning] = rootfs_warnings(tmp_path, unit_in(root, "/bin/sh", 'user = "app"\n'))
    assert warning.startswith("service.user: warning: unknown user 'app'")


def test_host_root_users_come_from_the_host_passwd(tmp_path: Path) -> None:
    assert warnings_for(tmp_path, 'user = "nobody"\n') == []
    assert warnings_for(tmp_path, 'user = "no-such-user-sbx"\n') == [
        f"{tmp_path}/u.toml: service.user: warning: unknown user 'no-such-user-sbx': not in "
        "this host's /etc/passwd: the unit will fail to start"
    ]


def test_a_writable_rootfs_must_hold_its_mount_points(tmp_path: Path) -> None:
    root = rootfs(tmp_path)
    for d in ("dev", "proc", "sys", "tmp"):
        (root / d).mkdir()
    writable = unit_in(root, "/bin/sh") + "read_only = false\n"
    mounts = (
        'mounts = [{ type = "tmpfs", target = "/data" }, { type = "tmpfs", target = "/tmp/x" }]\n'
    )
    assert rootfs_warnings(tmp_path, writable + mounts) == [
        f"sandbox.read_only: warning: {root} lacks /run, /data, where the sandbox mounts things, "
        "and sandboxd creates nothing in a root directory: with read_only = false the unit will "
        "fail to start; create them there or set overlay = true"
    ]
    # A read-only root gets a private overlay for them, and overlay = true has its own upper.
    assert rootfs_warnings(tmp_path, unit_in(root, "/bin/sh") + mounts) == []
    assert rootfs_warnings(tmp_path, writable + "overlay = true\n" + mounts) == []


def test_a_bridge_unit_is_warned_when_the_host_has_only_loopback_nameservers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 127.0.0.53\n")
    monkeypatch.setattr(resolvconf, "HOST_RESOLV", str(host))
    monkeypatch.setattr(resolvconf, "RESOLVED_UPSTREAM", str(tmp_path / "missing"))
    [found] = warnings_for(tmp_path, '[network]\nmode = "bridge"\n')
    assert found.startswith(f"{tmp_path}/u.toml: network.dns: warning: no nameserver a sandbox")
    # The unit's own servers, or a host with a reachable one, need no warning.
    assert warnings_for(tmp_path, '[network]\nmode = "bridge"\ndns = ["192.0.2.53"]\n') == []
    # An image gets the same resolv.conf, so the same warning; a root directory keeps its own.
    ref = write_layout(tmp_path / "img", [tar_bytes(lambda t: add_file(t, "bin/true"))])
    image = f'[sandbox]\nimage = "{ref}"\n[network]\nmode = "bridge"\n'
    assert [w.split(": ", 2)[1] for w in warnings_for(tmp_path, image)] == ["network.dns"]
    root = f'[sandbox]\nroot = "{tmp_path}"\n[network]\nmode = "bridge"\n'
    assert not any("network.dns" in w for w in warnings_for(tmp_path, root))
    host.write_text("nameserver 127.0.0.1\nnameserver 198.51.100.7\n")
    assert warnings_for(tmp_path, '[network]\nmode = "bridge"\n') == []
