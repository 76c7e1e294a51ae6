"""`status UNIT` shows the image a unit runs from."""

from __future__ import annotations

import datetime as dt

from supervisor.cli.commands.status import detail_lines


def test_image_line() -> None:
    unit = {
        "name": "web", "state": "running", "pid": 7, "restarts": 0,
        "image": {
            "ref": "/var/lib/images/web:1.0", "digest": "sha256:" + "ab" * 32,
            "layers": ["sha256:" + "1" * 64, "sha256:" + "2" * 64],
            "exposed_ports": ["8080/tcp"],
        },
    }  # fmt: skip
    lines = detail_lines(unit, dt.datetime.now(dt.UTC), color=False)
    assert (
        "  image:        /var/lib/images/web:1.0 (sha256:abababababab…, 2 layers; exposes 8080/tcp)"
        in lines
    )
    del unit["image"]
    assert not any("image" in line for line in detail_lines(unit, dt.datetime.now(dt.UTC), False))
