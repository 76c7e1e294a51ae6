"""The `[sandbox] image` value: an OCI image layout directory with a tag, or a `docker save`
archive. Parsed without touching the disk, so the schema can check the spelling.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

ARCHIVE_PREFIX = "docker-archive:"
DEFAULT_TAG = "latest"


@dataclass(frozen=True)
class ImageRef:
    kind: str  # "oci" (a layout directory) or "docker-archive" (a tarball)
    path: str  # absolute, normalised
    tag: str | None  # the ref.name annotation (oci); None for an archive

    def __str__(self) -> str:
        if self.kind == "oci":
            return f"{self.path}:{self.tag}"
        return f"{ARCHIVE_PREFIX}{self.path}"


def parse_ref(value: str) -> ImageRef:
    """`PATH[:TAG]` or `docker-archive:PATH`; ValueError says what is wrong.

    The tag is split off at a colon in the last path component only, so a directory such as
    /var/lib/images/nginx:1.25 (what `skopeo copy ... oci:/var/lib/images/nginx:1.25` names)
    reads as PATH=/var/lib/images/nginx, TAG=1.25, and a colon in a parent directory is part
    of the path.
    """
    if value.startswith(ARCHIVE_PREFIX):
        path = value.removeprefix(ARCHIVE_PREFIX)
        return ImageRef("docker-archive", _absolute(path, value), None)
    head, _, last = value.rpartition("/")
    tag = DEFAULT_TAG
    if ":" in last:
        last, _, tag = last.partition(":")
        if not tag or any(c.isspace() or c in "/:" for c in tag):
            raise ValueError(f"invalid tag {tag!r} in {value!r}")
    return ImageRef(
        "oci", _absolute(f"{head}/{last}" if head or value.startswith("/") else last, value), tag
    )


def _absolute(path: str, value: str) -> str:
    if not path.startswith("/"):
        raise ValueError(
            f'image must be an absolute path ("/var/lib/images/app:TAG") or '
            f'"docker-archive:/path/app.tar", got {value!r}'
        )
    if "\0" in path:
        raise ValueError("image path contains a NUL byte")
    normal = posixpath.normpath(path)
    if normal == "/":
        raise ValueError(f"{value!r} names the host's root, not an image")
    return normal
