"""Hostile images and the shared layer store (issue 22).

A layer is whatever the image's author put in it. These tarballs are built here, with correct
digests, so that only the unpacker stands between them and the host: a path that climbs out
(`..`, an absolute name), a device node, a symlink to a host directory followed by a file
"inside" it, a hardlink to a host file. Each is refused, and nothing is written anywhere: not
outside the store, not half a layer inside it. Then a root process in an image sandbox writes
to the image's files: only its own upper layer changes, never the store its neighbours share.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from supervisor.images.oci import ImageError, read_image
from supervisor.images.reference import parse_ref
from supervisor.images.store import LayerStore
from tests.support.daemon_kit import Daemon, new_daemon, teardown, wait_for
from tests.support.images import (
    add_entry,
    add_file,
    build_busybox,
    requires_image_tools,
    tar_bytes,
    write_layout,
)
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root]


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = new_daemon()
    yield d
    problems = teardown(d)
    shutil.rmtree(d.base, ignore_errors=True)
    assert not problems, problems


def _hostile(outside: Path) -> dict[str, Callable[[tarfile.TarFile], None]]:
    return {
        "dotdot": lambda t: add_file(t, "etc/../../escaped"),
        "absolute": lambda t: add_file(t, f"{outside}/absolute"),
        "device": lambda t: add_entry(t, "dev/sda", tarfile.BLKTYPE),
        "chardev": lambda t: add_entry(t, "dev/mem", tarfile.CHRTYPE),
        "symlink_then_file": lambda t: (
            add_entry(t, "evil", tarfile.SYMTYPE, str(outside)),
            add_file(t, "evil/through-link"),
        ),
        "relative_symlink_then_file": lambda t: (
            add_entry(t, "up", tarfile.SYMTYPE, "../../../../../../.."),
            add_file(t, f"up{outside}/through-relative-link"),
        ),
        "hardlink_out": lambda t: add_entry(t, "passwd", tarfile.LNKTYPE, "../../etc/passwd"),
    }


CASES = list(_hostile(Path("/x")))


@pytest.mark.parametrize("case", CASES)
def test_hostile_layer_is_refused(case: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    good = tar_bytes(lambda t: add_file(t, "bin/ok", b"fine"))
    bad = tar_bytes(lambda t: (add_file(t, "before"), _hostile(outside)[case](t)))
    ref = write_layout(tmp_path / "img", [good, bad])
    (tmp_path / "data").mkdir()
    store = LayerStore(str(tmp_path / "data" / "images"))
    image = read_image(parse_ref(ref))
    with pytest.raises(ImageError, match="refused"):
        store.ensure(image)
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "data" / "escaped").exists()
    # The good layer is complete and kept; of the bad one nothing at all.
    assert [layer.diff_id for layer in store.stored()] == [image.layers[0].diff_id]
    assert list((tmp_path / "data" / "images" / "tmp").iterdir()) == []


def test_corrupt_layer_is_refused_and_not_stored(tmp_path: Path) -> None:
    layer = tar_bytes(lambda t: add_file(t, "bin/tool", b"original"))
    ref = write_layout(tmp_path / "img", [layer])
    blob = tmp_path / "img" / "blobs" / "sha256" / hashlib.sha256(layer).hexdigest()
    blob.write_bytes(layer.replace(b"original", b"tampered"))  # same size, other bytes
    store = LayerStore(str(tmp_path / "images"))
    with pytest.raises(ImageError, match="digest does not match"):
        store.ensure(read_image(parse_ref(ref)))
    assert store.stored() == []


def test_hostile_image_fails_the_launch(daemon: Daemon, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    bad = tar_bytes(_hostile(outside)["symlink_then_file"])
    ref = write_layout(tmp_path / "img", [bad], config={"Cmd": ["/bin/sh"]})
    daemon.write_unit("evil", f'[sandbox]\nimage = "{ref}"\n[restart]\npolicy = "no"\n')
    daemon.start()
    unit = daemon.wait_unit("evil", lambda u: u["last_exit"] is not None, 60)
    assert unit["last_exit"].startswith("launch-error:image: "), unit
    assert "refused" in unit["last_exit"] and "evil" in unit["last_exit"]
    assert list(outside.iterdir()) == []
    assert list((daemon.data / "images" / "layers").iterdir()) == []
    assert daemon.stop() == 0


@requires_image_tools
def test_root_in_an_image_sandbox_cannot_change_the_shared_layers(
    daemon: Daemon, tmp_path: Path
) -> None:
    ref = build_busybox(tmp_path / "img")
    writer = (
        "echo owned >>/etc/passwd; rm /etc/group; echo x >/srv/index.html; "
        "echo wrote=$?; exec sleep 1000"
    )
    reader = (
        "grep -c owned /etc/passwd; test -e /etc/group && echo group=present; "
        "cat /srv/index.html; exec sleep 1000"
    )
    for name, script in (("writer", writer), ("reader", reader)):
        daemon.write_unit(name, f"""
[service]
exec = ["/bin/sh", "-c", "{script}"]
user = "root"
autostart = {"true" if name == "writer" else "false"}
stop_timeout = "500ms"
[sandbox]
image = "{ref}"
read_only = false
""")  # fmt: skip
    daemon.start()
    wait_for(lambda: "wrote=0" in daemon.output("writer"), 60, lambda: daemon.output("writer"))
    layers = daemon.data / "images" / "layers"
    (passwd,) = layers.glob("*/etc/passwd")
    assert b"owned" not in passwd.read_bytes()
    assert len(list(layers.glob("*/etc/group"))) == 1
    # The writes are in the writer's own upper layer.
    upper = daemon.data / "overlay" / "writer" / "upper"
    assert b"owned" in (upper / "etc" / "passwd").read_bytes()
    code, _ = daemon.request("POST", "/v1/units/reader/start")
    assert code == 200
    wait_for(lambda: "hello from an image" in daemon.output("reader"), 60,
             lambda: daemon.output("reader"))  # fmt: skip
    assert daemon.output("reader").splitlines()[:2] == ["0", "group=present"]
    assert daemon.stop() == 0
