"""The layer store's helper process, the daemon's hands for slow store work:

    python -m supervisor.images unpack STORE IMAGE_JSON
    python -m supervisor.images usage STORE           (stdout: {diff_id: bytes on disk})
    python -m supervisor.images prune STORE [DIFF_ID...]   (keeps those; stdout: what went)

The daemon runs `unpack` as a child process (sandbox/host/imagefetch.py) before it launches an
image sandbox whose layers are not all in the store yet: unpacking and hashing a 50 MB image
takes seconds of CPU and disk, and the daemon's single event loop must not stop for that.
`usage` (every file of the store walked) and `prune` (whole trees removed), for
`sandboxctl images`, run here for the same reason. The image JSON is the one the unit was
loaded with, so the layers unpacked are exactly those whose digests the spec hash covers; the
helper reads nothing but the image's own files. Exit 0 on success; else one line on stderr
naming the file at fault, and exit 1.
"""

from __future__ import annotations

import json
import sys

from supervisor.images.oci import Image, ImageError
from supervisor.images.store import LayerStore

USAGE = (
    "usage: python -m supervisor.images "
    "{unpack STORE IMAGE_JSON | usage STORE | prune STORE [DIFF_ID...]}"
)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("unpack", "usage", "prune"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        store = LayerStore(argv[1])
        if argv[0] == "usage":
            print(json.dumps({layer.diff_id: layer.size for layer in store.stored()}))
        elif argv[0] == "prune":
            print(json.dumps({layer.diff_id: layer.size for layer in store.prune(argv[2:])}))
        elif len(argv) != 3:
            print(USAGE, file=sys.stderr)
            return 2
        else:
            store.ensure(Image.from_json(json.loads(argv[2])))
    except ImageError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"layer store {argv[1]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
