"""What `sandboxctl images` reports and what a prune may remove (engine/images.py)."""

from __future__ import annotations

from supervisor.engine.images import in_use, report
from supervisor.images.oci import Image, Layer
from supervisor.unit.schema import UnitFile
from supervisor.unit.spec import UnitSpec


def _spec(
    name: str, ref: str | None, digest: str = "sha256:m1", layers: tuple[str, ...] = ()
) -> UnitSpec:
    unit = UnitFile.model_validate({"service": {"exec": ["/bin/app"]}})
    image = None
    if ref is not None:
        stored = tuple(Layer(d, f"blobs/{d}", None, None, 1) for d in layers)
        image = Image(ref, "oci", ref.rpartition(":")[0], digest, stored)
    return UnitSpec(name, f"/u/{name}.toml", unit, image)


def test_rows_by_image_with_their_units_and_the_unused_layers() -> None:
    specs = [
        ("a", _spec("a", "/img/web:1", layers=("l1", "l2"))),
        ("b", _spec("b", "/img/web:1", layers=("l1", "l2"))),
        ("c", _spec("c", "/img/api:2", "sha256:m2", ("l1", "l3"))),
        ("d", _spec("d", None)),
    ]
    stored = {"l1": 100, "l2": 20, "old": 7}  # l3 not unpacked yet
    answer = report(specs, stored)
    assert answer["unused"] == {"layers": 1, "size": 7}
    api, web = answer["images"]
    assert (web["name"], web["tag"], web["units"], web["size"], web["unpacked"]) == (
        "/img/web",
        "1",
        ["a", "b"],
        120,
        True,
    )
    assert (api["units"], api["size"], api["unpacked"]) == (["c"], 100, False)
    assert in_use(s for _, s in specs) == {"l1", "l2", "l3"}


def test_archive_rows_have_no_tag() -> None:
    spec = _spec("a", "docker-archive:/img/app.tar", layers=("l1",))
    (row,) = report([("a", spec)], {"l1": 5})["images"]
    assert (row["name"], row["tag"]) == ("/img/app.tar", None)
