"""An image's /etc/resolv.conf in bridge mode (issue 21 follow-up): hostile links, shared layers.

sandboxd writes the sandbox's resolv.conf into an image root while building it (rootplan
WriteInRoot), so the image decides where `/etc/resolv.conf` leads. Its author can make the
file, or /etc itself, a link to a host path, absolute or through "..": the write is resolved
inside the root (openat2 RESOLVE_IN_ROOT), so the host file stays byte for byte and mtime for
mtime as it was and nothing appears on the host. The write goes into the unit's own upper
layer: the layer store, shared by every unit on the image, is never changed, and a neighbour
with other nameservers sees its own.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.bridges import free_prefix, remove_bridge
from tests.support.daemon_kit import Daemon, new_daemon, teardown, wait_for
from tests.support.images import add_entry, add_file, requires_image_tools, tar_bytes, write_layout
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root, requires_image_tools]
# A FIFO would block cat (as it would have blocked sandboxd's write, had it opened it).
REPORT = (
    "test -p /etc/resolv.conf && echo fifo || cat /etc/resolv.conf; echo status=$?; exec sleep 1000"
)


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    """A daemon with a bridge of its own; the bridge and its anti-spoofing table are removed
    after the daemon has stopped."""
    d = new_daemon()
    bridge = f"sbxr{os.getpid() % 1000}{uuid.uuid4().hex[:4]}"
    d.config.write_text(f'[network]\nbridge = "{bridge}"\nsubnet = "{free_prefix("10.202")}0/24"\n')
    yield d
    problems = teardown(d)
    remove_bridge(bridge)
    shutil.rmtree(d.base, ignore_errors=True)
    assert not problems, problems


@pytest.fixture
def victim() -> Iterator[Path]:
    """A host directory a hostile image points at, with one file in it."""
    base = Path("/tmp") / f"sbx-resolv-{uuid.uuid4().hex}"
    base.mkdir(mode=0o755)
    (base / "victim").write_bytes(b"host data\n")
    os.utime(base / "victim", (1_000_000_000, 1_000_000_000))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `path` with its content and mtime; directories by their mtime."""
    got = {".": (b"", path.stat().st_mtime_ns)}
    for p in sorted(path.rglob("*")):
        data = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
        got[str(p.relative_to(path))] = (data, p.lstat().st_mtime_ns)
    return got


def _image(layout: Path, *entries: tuple[str, bytes, str]) -> str:
    """busybox as /bin/sh plus `entries`: (name, tar type, link target or file content)."""

    def add(tar: tarfile.TarFile) -> None:
        add_file(tar, "bin/busybox", Path("/bin/busybox").read_bytes(), 0o755)
        for applet in ("sh", "cat", "echo", "sleep"):
            add_entry(tar, f"bin/{applet}", tarfile.SYMTYPE, "busybox")
        for name, kind, value in entries:
            if kind == tarfile.REGTYPE:
                add_file(tar, name, value.encode())
            else:
                add_entry(tar, name, kind, value)

    return write_layout(layout, [tar_bytes(add)], "v1", {"Cmd": ["/bin/sh"]})


def _unit(ref: str, dns: str, *, read_only: bool = True, autostart: bool = True) -> str:
    return f"""
[service]
exec = ["/bin/sh", "-c", "{REPORT}"]
user = "root"
autostart = {str(autostart).lower()}
stop_timeout = "500ms"
[sandbox]
image = "{ref}"
read_only = {str(read_only).lower()}
[network]
mode = "bridge"
dns = ["{dns}"]
"""


def _store_digest(daemon: Daemon) -> str:
    """One digest over every path, link target and file content in the layer store."""
    digest = hashlib.sha256()
    store = daemon.data / "images" / "layers"
    for p in sorted(store.rglob("*")):
        st = p.lstat()
        digest.update(f"{p.relative_to(store)}\0{st.st_mode:o}\0{st.st_mtime_ns}\0".encode())
        if p.is_symlink():
            digest.update(os.readlink(p).encode())
        elif p.is_file():
            digest.update(p.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("read_only", [True, False])
@pytest.mark.parametrize("how", ["absolute_file", "dotdot_file", "etc_dir", "fifo"])
def test_a_hostile_resolv_conf_link_never_reaches_the_host(
    daemon: Daemon, victim: Path, tmp_path: Path, how: str, read_only: bool
) -> None:
    entries = {
        "absolute_file": [("etc/resolv.conf", tarfile.SYMTYPE, f"{victim}/victim")],
        "dotdot_file": [("etc/resolv.conf", tarfile.SYMTYPE, f"../../../../..{victim}/victim")],
        # /etc itself: the file would be created in the host directory.
        "etc_dir": [("etc", tarfile.SYMTYPE, str(victim))],
        # Opening a FIFO for writing would block PID 1 (a device node is refused at unpack).
        "fifo": [("etc/resolv.conf", tarfile.FIFOTYPE, "")],
    }[how]
    ref = _image(tmp_path / "img", *entries)
    before = _snapshot(victim)
    daemon.write_unit("evil", _unit(ref, "192.0.2.53", read_only=read_only))
    daemon.start()
    # The launch went through: the service ran and reported (whatever its resolv.conf is).
    wait_for(lambda: "status=" in daemon.output("evil"), 60, lambda: daemon.output("evil"))
    assert daemon.unit("evil")["state"] == "running"
    assert _snapshot(victim) == before, "the host directory or its file changed"
    assert "host data" not in daemon.output("evil"), "the host file was read through the link"
    if how == "fifo":
        assert "fifo\nstatus=0" in daemon.output("evil"), "the image's FIFO is left as it is"
    assert daemon.stop() == 0


def test_a_link_inside_the_image_is_followed_inside_it(daemon: Daemon, tmp_path: Path) -> None:
    """The usual layout (resolv.conf -> a file elsewhere in the image) works: the link is
    followed within the root, and the same absolute path on the host is not created."""
    where = f"opt/sbx-resolv-{uuid.uuid4().hex}"
    ref = _image(
        tmp_path / "img",
        (f"{where}/resolv.conf", tarfile.REGTYPE, "nameserver 198.51.100.1\n"),
        ("etc/resolv.conf", tarfile.SYMTYPE, f"/{where}/resolv.conf"),
    )
    daemon.write_unit("app", _unit(ref, "192.0.2.53"))
    daemon.start()
    wait_for(lambda: "status=" in daemon.output("app"), 60, lambda: daemon.output("app"))
    out = daemon.output("app")
    assert "nameserver 192.0.2.53" in out and "198.51.100.1" not in out
    assert not Path("/" + where).exists()
    assert daemon.stop() == 0


def test_the_shared_layers_keep_the_images_file_and_each_unit_gets_its_own(
    daemon: Daemon, tmp_path: Path
) -> None:
    ref = _image(
        tmp_path / "img", ("etc/resolv.conf", tarfile.REGTYPE, "nameserver 198.51.100.1\n")
    )
    # "first" is launched alone, so the store exists before any bridge unit writes; then "a"
    # with a persistent upper layer and "b" read-only, each with its own nameserver.
    daemon.write_unit("first", _unit(ref, "192.0.2.50"))
    daemon.write_unit("a", _unit(ref, "192.0.2.51", read_only=False, autostart=False))
    daemon.write_unit("b", _unit(ref, "192.0.2.52", autostart=False))
    daemon.start()
    wait_for(lambda: "status=0" in daemon.output("first"), 60, lambda: daemon.output("first"))
    store = _store_digest(daemon)
    (stored,) = (daemon.data / "images" / "layers").glob("*/etc/resolv.conf")
    assert stored.read_bytes() == b"nameserver 198.51.100.1\n"
    for name in ("a", "b"):
        code, body = daemon.request("POST", f"/v1/units/{name}/start")
        assert code == 200, body
    for name in ("a", "b"):
        wait_for(lambda n=name: "status=0" in daemon.output(n), 60,  # type: ignore[misc]
                 lambda n=name: daemon.output(n))  # fmt: skip
    for name, server in (("first", "192.0.2.50"), ("a", "192.0.2.51"), ("b", "192.0.2.52")):
        out = daemon.output(name)
        assert f"nameserver {server}\n" in out, (name, out)
        others = {"192.0.2.50", "192.0.2.51", "192.0.2.52", "198.51.100.1"} - {server}
        assert not any(o in out for o in others), (name, out)
    assert _store_digest(daemon) == store, "the shared layer store changed"
    # "a"'s copy is in its own persistent upper layer, 0644, owned by its root: the first id
    # of its user namespace's range on the host (root-owned inside).
    upper = daemon.data / "overlay" / "a" / "upper" / "etc" / "resolv.conf"
    st = upper.stat()
    first = int(daemon.unit("a")["userns"].split("-")[0])
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (first, first, 0o644)
    assert b"nameserver 192.0.2.51\n" in upper.read_bytes()
    assert daemon.stop() == 0
