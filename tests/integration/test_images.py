"""Images as sandbox roots, through real daemons: an OCI layout built with umoci and its
`docker save` form made by skopeo, the layer store shared between units, the image's config as
defaults, and a `reload` onto a rebuilt tag."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon_kit import Daemon, wait_for
from tests.support.images import (
    add_file,
    build_busybox,
    requires_image_tools,
    requires_skopeo,
    tar_bytes,
    to_archive,
    write_layout,
)
from tests.support.requires import requires_root

# cgroup_v2: the v2 VM runs these too (scripts/test-v2.sh adds umoci to its image; skopeo cannot
# be there, so the docker-archive test runs on the host only).
pytestmark = [pytest.mark.root, pytest.mark.cgroup_v2, requires_root, requires_image_tools]

# What the service reports about its root: the deleted file, the image's config as defaults.
REPORT = (
    "test -e /etc/doomed && echo doomed=present || echo doomed=absent; cat /etc/motd; "
    "grep -o '^overlay / overlay r[ow]' /proc/mounts; "
    "echo uid=$(id -u) pwd=$(pwd) greeting=$GREETING; exec sleep 1000"
)


def _unit(image: str, extra: str = "") -> str:
    return f"""
[service]
exec = ["/bin/sh", "-c", "{REPORT}"]
stop_timeout = "500ms"
[sandbox]
image = "{image}"
{extra}
"""


def _layers(daemon: Daemon) -> dict[str, int]:
    """Each stored layer directory and the inode of its root."""
    store = daemon.data / "images" / "layers"
    return {p.name: p.stat().st_ino for p in store.iterdir()} if store.is_dir() else {}


@requires_skopeo
def test_oci_and_archive_share_layers(daemon: Daemon, tmp_path: Path) -> None:
    oci = build_busybox(tmp_path / "busybox", "1.0")
    archive = to_archive(oci, tmp_path / "busybox.tar")
    daemon.write_unit("a", _unit(oci))
    daemon.start()
    wait_for(lambda: "greeting=" in daemon.output("a"), 60, lambda: daemon.output("a"))
    out = daemon.output("a")
    assert "doomed=absent" in out  # the second layer's whiteout hides the first's file
    # read_only = true (the default): the layers under a read-only root.
    assert "overlay / overlay ro" in out
    assert "built by scripts/build-example-image.sh" in out
    # User, WorkingDir and Env from the image config (User "app" is in the image's passwd).
    assert "uid=1000 pwd=/home/app greeting=hello" in out
    first = _layers(daemon)
    assert len(first) == 2
    # The store holds the image's setuid files: no host user may reach it.
    for d in ("images", "images/layers", "images/tmp"):
        assert stat.S_IMODE((daemon.data / d).stat().st_mode) == 0o700, d
    image = daemon.unit("a")["image"]
    assert image["ref"] == oci and image["exposed_ports"] == ["8080/tcp"]
    assert image["digest"].startswith("sha256:") and len(image["layers"]) == 2
    busybox = next((daemon.data / "images" / "layers").glob("*/bin/busybox")).stat()

    # The archive form of the same image, and a second unit on the OCI form: no new layer,
    # and the layers on disk are the very same directories and files.
    daemon.write_unit("b", _unit(archive))
    daemon.write_unit("c", _unit(oci))
    code, _ = daemon.request("POST", "/v1/reload")
    assert code == 200
    for name in ("b", "c"):
        wait_for(lambda n=name: "greeting=hello" in daemon.output(n), 60,
                 lambda n=name: daemon.output(n))  # fmt: skip
        assert "doomed=absent" in daemon.output(name)
    assert _layers(daemon) == first
    # Only the first start unpacked anything.
    assert [e["unit"] for e in daemon.events("image.unpacked")] == ["a"]
    again = next((daemon.data / "images" / "layers").glob("*/bin/busybox")).stat()
    assert (again.st_ino, again.st_size) == (busybox.st_ino, busybox.st_size)
    assert daemon.stop() == 0


def test_reload_follows_a_rebuilt_tag(daemon: Daemon, tmp_path: Path) -> None:
    layout = tmp_path / "img"
    oci = build_busybox(layout, "v")
    daemon.write_unit("a", _unit(oci))
    daemon.start()
    first = daemon.wait_unit("a", lambda u: u["state"] == "running")
    # Reload with nothing changed: the same run goes on.
    code, _ = daemon.request("POST", "/v1/reload")
    assert code == 200 and daemon.unit("a")["pid"] == first["pid"]
    # The tag now names another image (a new config: another manifest digest).
    subprocess.run(
        ["umoci", "config", "--image", oci, "--config.env", "GREETING=rebuilt"],
        check=True, capture_output=True,
    )  # fmt: skip
    code, _ = daemon.request("POST", "/v1/reload")
    assert code == 200
    wait_for(lambda: "greeting=rebuilt" in daemon.output("a"), 60, lambda: daemon.output("a"))
    assert daemon.unit("a")["pid"] != first["pid"]
    assert daemon.stop() == 0


@pytest.mark.usefixtures("not_a_subreaper")  # the killed daemon's sandbox goes to init
def test_image_sandbox_is_readopted(daemon: Daemon, tmp_path: Path) -> None:
    daemon.write_unit("a", _unit(build_busybox(tmp_path / "img")))
    daemon.start()
    first = daemon.wait_unit("a", lambda u: u["state"] == "running")
    daemon.wait_recorded()
    daemon.kill9()
    daemon.start()
    again = daemon.wait_unit("a", lambda u: u["state"] == "running")
    assert (again["pid"], again["restarts"]) == (first["pid"], 0)
    assert [e["unit"] for e in daemon.events("unit.adopted")] == ["a"]
    assert daemon.stop() == 0


def test_example_unit_image_toml(daemon: Daemon, tmp_path: Path) -> None:
    """units/image.toml as shipped, on a fresh build of its image (not the host's copy)."""
    text = (Path(__file__).resolve().parents[2] / "units" / "image.toml").read_text()
    assert '"/var/lib/images/busybox:latest"' in text
    daemon.write_unit("image", text.replace("/var/lib/images/busybox", str(tmp_path / "img")))
    build_busybox(tmp_path / "img")
    daemon.start()
    unit = daemon.wait_unit("image", lambda u: u["health"] == "healthy", 60)
    enter = ["sandboxctl", "exec", "image", "--", "/bin/wget", "-qO-", "http://127.0.0.1:8080/"]
    out = subprocess.run(
        [str(Path(sys.executable).parent / enter[0]), *enter[1:]],
        env={**os.environ, "SANDBOXD_SOCKET": str(daemon.socket)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0 and "hello from an image" in out.stdout, out
    assert unit["pid"] == daemon.unit("image")["pid"]
    assert daemon.stop() == 0


def _sandboxctl(daemon: Daemon, *args: str) -> str:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "sandboxctl"), *args],
        env={**os.environ, "SANDBOXD_SOCKET": str(daemon.socket)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out
    return out.stdout


def test_images_and_prune(daemon: Daemon, tmp_path: Path) -> None:
    busybox = build_busybox(tmp_path / "busybox", "1.0")
    other = write_layout(tmp_path / "other", [tar_bytes(lambda t: add_file(t, "data/x", b"1"))])
    daemon.write_unit("a", _unit(busybox))
    # A command the image lacks: the launch fails after its layer was unpacked.
    daemon.write_unit("b", f'[sandbox]\nimage = "{other}"\n[restart]\npolicy = "no"\n')
    daemon.start()
    daemon.wait_unit("a", lambda u: u["state"] == "running", 60)
    daemon.wait_unit("b", lambda u: u["last_exit"] is not None, 60)
    layers = daemon.data / "images" / "layers"
    assert len(list(layers.iterdir())) == 3
    code, answer = daemon.request("GET", "/v1/images")
    assert code == 200 and answer["unused"] == {"layers": 0, "size": 0}
    rows = {row["tag"]: row for row in answer["images"]}
    assert rows["1.0"]["units"] == ["a"] and rows["1.0"]["layers"] == 2
    assert rows["1.0"]["unpacked"] and rows["1.0"]["size"] > 1 << 20  # busybox itself
    assert rows["latest"]["units"] == ["b"] and rows["latest"]["name"] == str(tmp_path / "other")
    table = _sandboxctl(daemon, "images").splitlines()
    assert table[0].split() == ["NAME", "TAG", "DIGEST", "SIZE", "UNITS"]

    # Nothing to prune while every image has a unit.
    assert _sandboxctl(daemon, "images", "prune") == "removed 0 layers, 0B freed\n"
    daemon.remove_unit("b")
    code, _ = daemon.request("POST", "/v1/reload")
    assert code == 200
    code, answer = daemon.request("GET", "/v1/images")
    assert [row["units"] for row in answer["images"]] == [["a"]]
    assert answer["unused"]["layers"] == 1
    assert "1 unused layers" in _sandboxctl(daemon, "images")
    assert _sandboxctl(daemon, "images", "prune").startswith("removed 1 layers, ")
    assert len(list(layers.iterdir())) == 2  # a's, which it runs on, stay
    assert (tmp_path / "other" / "index.json").exists()  # the operator's image is never touched
    # a is unharmed and starts again from the store without unpacking.
    code, _ = daemon.request("POST", "/v1/units/a/restart")
    assert code == 200 and daemon.unit("a")["state"] == "running"
    assert daemon.stop() == 0
