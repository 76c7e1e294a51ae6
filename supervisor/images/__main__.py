"""The unpack helper: `python -m supervisor.images unpack STORE IMAGE_JSON`.

The daemon runs this as a child process (sandbox/host/imagefetch.py) before it launches an
image sandbox whose layers are not all in the store yet: unpacking and hashing a 50 MB image
takes seconds of CPU and disk, and the daemon's single event loop must not stop for that. The
image JSON is the one the unit was loaded with, so the layers unpacked are exactly those whose
digests the spec hash covers; the helper reads nothing but the image's own files. Exit 0 when
every layer is in the store; else one line on stderr naming the file at fault, and exit 1.
"""

from __future__ import annotations

import json
import sys

from supervisor.images.oci import Image, ImageError
from supervisor.images.store import LayerStore


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "unpack":
        print("usage: python -m supervisor.images unpack STORE IMAGE_JSON", file=sys.stderr)
        return 2
    try:
        image = Image.from_json(json.loads(argv[2]))
        LayerStore(argv[1]).ensure(image)
    except ImageError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"layer store {argv[1]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
