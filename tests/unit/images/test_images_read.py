"""Reading images (hand-made OCI layouts: no root, no tools) and what a unit takes from them:
references, errors naming the file, the config as defaults, the digest in the spec hash."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from supervisor.cli.main import main
from supervisor.engine.status import spec_from_json
from supervisor.images.oci import ImageError, read_image
from supervisor.images.reference import parse_ref
from supervisor.unit.loader import UnitFileError, UnitLoader, load_unit
from tests.support.images import add_file, tar_bytes, write_layout

LAYER = tar_bytes(lambda t: add_file(t, "bin/app", b"#!/bin/sh\n", 0o755))
CONFIG = {
    "Entrypoint": ["/bin/app"],
    "Cmd": ["--port", "80"],
    "Env": ["PATH=/usr/bin:/bin", "MODE=image"],
    "WorkingDir": "/srv",
    "User": "www:web",
    "StopSignal": "SIGQUIT",
    "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
}


@pytest.mark.parametrize(
    ("value", "kind", "path", "tag"),
    [
        ("/var/lib/images/nginx:1.25", "oci", "/var/lib/images/nginx", "1.25"),
        ("/var/lib/images/nginx", "oci", "/var/lib/images/nginx", "latest"),
        ("/a:b/img", "oci", "/a:b/img", "latest"),
        ("docker-archive:/srv/app.tar", "docker-archive", "/srv/app.tar", None),
    ],
)
def test_references(value: str, kind: str, path: str, tag: str | None) -> None:
    ref = parse_ref(value)
    assert (ref.kind, ref.path, ref.tag) == (kind, path, tag)


@pytest.mark.parametrize("value", ["images/nginx", "docker-archive:app.tar", "/img:", "/"])
def test_bad_references(value: str) -> None:
    with pytest.raises(ValueError):
        parse_ref(value)


def _unit(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "web.toml"
    path.write_text(body)
    return path


def test_config_gives_the_defaults_and_the_unit_wins(tmp_path: Path) -> None:
    ref = write_layout(tmp_path / "img", [LAYER], "v1", CONFIG)
    spec = load_unit(_unit(tmp_path, f'[sandbox]\nimage = "{ref}"\n'))
    service = spec.unit.service
    assert service.exec == ["/bin/app", "--port", "80"]
    assert service.env == {"PATH": "/usr/bin:/bin", "MODE": "image"}
    assert (service.workdir, service.user, service.group) == ("/srv", "www", "web")
    assert service.stop_signal == "SIGQUIT"
    assert spec.image is not None and spec.image.config.exposed_ports == ("53/udp", "80/tcp")

    spec = load_unit(_unit(tmp_path, f"""
[service]
exec = ["/bin/app", "--debug"]
env = {{ MODE = "unit" }}
user = "nobody"
[sandbox]
image = "{ref}"
"""))  # fmt: skip
    service = spec.unit.service
    assert service.exec == ["/bin/app", "--debug"]  # replaces Entrypoint and Cmd
    assert service.env == {"PATH": "/usr/bin:/bin", "MODE": "unit"}
    assert (service.user, service.group) == ("nobody", None)


def test_the_image_digest_is_in_the_spec_hash(tmp_path: Path) -> None:
    ref = write_layout(tmp_path / "img", [LAYER], "v1", CONFIG)
    unit = _unit(tmp_path, f'[sandbox]\nimage = "{ref}"\n')
    first = load_unit(unit)
    assert load_unit(unit).hash == first.hash
    # The state file's record gives back the same spec, image included (re-adoption).
    again = spec_from_json(json.loads(json.dumps(first.to_json())))
    assert again is not None and again.hash == first.hash and again.image == first.image
    # The same tag now names an image with another layer.
    other = tar_bytes(lambda t: add_file(t, "bin/app", b"#!/bin/sh\necho 2\n", 0o755))
    write_layout(tmp_path / "img", [other], "v1", CONFIG)
    assert load_unit(unit).hash != first.hash


def _error(tmp_path: Path, value: str) -> str:
    with pytest.raises(UnitFileError) as info:
        load_unit(_unit(tmp_path, f'[sandbox]\nimage = "{value}"\n'))
    (error,) = info.value.errors
    assert (error.key, error.line) == ("sandbox.image", 2)
    return error.message


def test_missing_tag_names_the_index(tmp_path: Path) -> None:
    ref = write_layout(tmp_path / "img", [LAYER], "v1", CONFIG)
    message = _error(tmp_path, ref.replace(":v1", ":v2"))
    assert message == f"{tmp_path}/img/index.json: no tag 'v2' (the tags there are v1)"


def test_digest_mismatch_names_the_blob(tmp_path: Path) -> None:
    ref = write_layout(tmp_path / "img", [LAYER], "v1", CONFIG)
    index = json.loads((tmp_path / "img" / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    blob = tmp_path / "img" / "blobs" / "sha256" / digest[7:]
    blob.write_bytes(blob.read_bytes() + b" ")
    message = _error(tmp_path, ref)
    assert message.startswith(f"{blob}: digest does not match: ")


def test_unsupported_media_type(tmp_path: Path) -> None:
    ref = write_layout(tmp_path / "img", [LAYER], "v1", CONFIG)
    index_path = tmp_path / "img" / "index.json"
    index = json.loads(index_path.read_text())
    digest = index["manifests"][0]["digest"]
    blob = tmp_path / "img" / "blobs" / "sha256" / digest[7:]
    manifest = json.loads(blob.read_bytes())
    manifest["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
    data = json.dumps(manifest).encode()
    new = "sha256:" + hashlib.sha256(data).hexdigest()
    (tmp_path / "img" / "blobs" / "sha256" / new[7:]).write_bytes(data)
    index["manifests"][0].update(digest=new, size=len(data))
    index_path.write_text(json.dumps(index))
    message = _error(tmp_path, ref)
    assert "layers[0]: unsupported media type 'application/vnd.oci.image.layer.v1.tar+zstd'" in (
        message
    )


def test_image_and_root_are_exclusive(tmp_path: Path) -> None:
    ref = write_layout(tmp_path / "img", [LAYER], "v1", CONFIG)
    with pytest.raises(UnitFileError, match="image and root are mutually exclusive"):
        load_unit(_unit(tmp_path, f'[sandbox]\nimage = "{ref}"\nroot = "/srv"\n'))


def test_no_command_anywhere(tmp_path: Path) -> None:
    ref = write_layout(tmp_path / "img", [LAYER], "v1", {"Env": ["A=1"]})
    assert "has no Entrypoint or Cmd; set service.exec" in _error(tmp_path, ref)


def test_verify_layers_reads_the_blobs(tmp_path: Path) -> None:
    ref = write_layout(tmp_path / "img", [LAYER], "v1", CONFIG)
    blob = tmp_path / "img" / "blobs" / "sha256" / hashlib.sha256(LAYER).hexdigest()
    blob.write_bytes(LAYER.replace(b"#!/bin/sh", b"#!/bin/xx"))
    read_image(parse_ref(ref))  # sizes match: the cheap read does not notice
    with pytest.raises(ImageError, match="digest does not match"):
        read_image(parse_ref(ref), verify_layers=True)


def test_validate_checks_layer_digests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = write_layout(tmp_path / "img", [LAYER], "v1", CONFIG)
    unit = _unit(tmp_path, f'[sandbox]\nimage = "{ref}"\n')
    assert main(["validate", str(unit)]) == 0
    blob = tmp_path / "img" / "blobs" / "sha256" / hashlib.sha256(LAYER).hexdigest()
    blob.write_bytes(LAYER.replace(b"#!/bin/sh", b"#!/bin/xx"))
    capsys.readouterr()
    assert main(["validate", str(unit)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{unit}:2: sandbox.image: {blob}: digest does not match: "), err
    assert main(["validate", "--no-host-checks", str(tmp_path)]) == 0


def test_the_loader_sees_a_new_image_under_an_unchanged_file(tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.mkdir()
    ref = write_layout(tmp_path / "img", [LAYER], "v1", CONFIG)
    unit = units / "web.toml"
    unit.write_text(f'[sandbox]\nimage = "{ref}"\n')
    os.utime(unit, (1_000_000_000, 1_000_000_000))  # long past: the cache trusts its stat
    loader = UnitLoader()
    first = loader.load_directory(units).specs["web"]
    assert loader.load_directory(units).specs["web"].hash == first.hash
    write_layout(tmp_path / "img", [LAYER], "v1", {**CONFIG, "Env": ["MODE=rebuilt"]})
    again = loader.load_directory(units).specs["web"]
    assert again.hash != first.hash and again.unit.service.env["MODE"] == "rebuilt"


def test_dns_is_allowed_with_an_image_in_bridge_mode(tmp_path: Path) -> None:
    # Written into the unit's own upper layer at launch (rootplan WriteInRoot), as Docker does.
    ref = write_layout(tmp_path / "img", [LAYER], "v1", CONFIG)
    body = (
        f'[sandbox]\nimage = "{ref}"\n[network]\nmode = "bridge"\ndns = ["10.0.0.53"]\n'
        'dns_search = ["example.internal"]\n'
    )
    network = load_unit(_unit(tmp_path, body)).unit.network
    assert network.dns == ["10.0.0.53"] and network.dns_search == ["example.internal"]


def test_a_template_instance_and_a_drop_in_get_the_image_defaults(tmp_path: Path) -> None:
    """Templates and drop-ins are merged first; the image's config then fills what the merged
    unit leaves out, and a missing image is an error naming the file that set it."""
    ref = write_layout(tmp_path / "img", [LAYER], "v1", CONFIG)
    units = tmp_path / "units"
    units.mkdir()
    (units / "app@.toml").write_text('[service]\nenv = { PORT = "%i" }\n')
    (units / "app@.toml.d").mkdir()
    (units / "app@.toml.d" / "image.toml").write_text(f'[sandbox]\nimage = "{ref}"\n')
    (units / "app@8080.toml").write_text("")
    spec = load_unit(units / "app@8080.toml")
    assert spec.image is not None and spec.image.config.exposed_ports == ("53/udp", "80/tcp")
    assert spec.unit.service.exec == ["/bin/app", "--port", "80"]
    assert spec.unit.service.env == {"PATH": "/usr/bin:/bin", "MODE": "image", "PORT": "8080"}
    assert spec.template == str(units / "app@.toml")
    again = spec_from_json(json.loads(json.dumps(spec.to_json())))
    assert again is not None and again.hash == spec.hash and again.dropins == spec.dropins

    dropin = units / "app@.toml.d" / "image.toml"
    dropin.write_text(f'[sandbox]\nimage = "{tmp_path}/missing"\n')
    with pytest.raises(UnitFileError) as info:
        load_unit(units / "app@8080.toml")
    (error,) = info.value.errors
    assert (error.path, error.key, error.line) == (str(dropin), "sandbox.image", 2)
