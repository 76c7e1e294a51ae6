"""An image unit's layers, in the layer store before its launch (images/store.py).

Unpacking is the slow part of a first start (a 50 MB image: seconds of gunzip, sha256 and
file creation), and the daemon's single event loop must not stop for it: every other unit's
exits, health checks and API requests wait on that loop. So the daemon runs the unpack helper
(`python -m supervisor.images unpack`) as a child process and waits for its exit through a
pidfd (linux/childwait.py); when every layer is already in the store, the launch goes ahead
after a few stat calls, with no process at all. The helper's one-line error (the file at fault
and why) becomes `launch-error:image: ...`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from supervisor.errors import LaunchError
from supervisor.images.store import LayerStore
from supervisor.linux.childwait import wait_child
from supervisor.unit.spec import UnitSpec

STAGE = "image"
# Unpacking gigabytes on a slow disk takes minutes; this only bounds a wedged helper.
TIMEOUT = 1800.0
MESSAGE_LIMIT = 2000
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


async def ensure_layers(
    store_root: str, spec: UnitSpec, timeout: float = TIMEOUT
) -> tuple[str, ...]:
    """The unit's layer directories, bottom first, unpacked by the helper if any is missing.
    LaunchError (stage "image") when the image is gone, altered or refused."""
    image = spec.image
    if image is None:
        raise LaunchError(spec.name, STAGE, "the unit names an image that was not loaded")
    store = LayerStore(store_root)
    paths = tuple(store.layer_path(layer.diff_id) for layer in image.layers)
    if all(os.path.isdir(path) for path in paths):
        return paths
    out = os.memfd_create("image-unpack", os.MFD_CLOEXEC)
    try:
        argv = [sys.executable, "-m", "supervisor.images", "unpack", store_root,
                json.dumps(image.to_json())]  # fmt: skip
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd="/",
                env={"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8"},
            )  # fmt: skip
        except OSError as exc:
            raise LaunchError(spec.name, STAGE, f"cannot run the unpack helper: {exc}") from None
        status = await wait_child(proc, timeout)
        if status is None:
            raise LaunchError(spec.name, STAGE, f"unpacking took longer than {timeout:g}s; killed")
        if status != 0:
            size = os.fstat(out).st_size
            text = os.pread(out, min(size, 4 * MESSAGE_LIMIT), 0).decode("utf-8", "replace")
            message = text.strip().splitlines()[-1] if text.strip() else f"exit status {status}"
            raise LaunchError(spec.name, STAGE, message[:MESSAGE_LIMIT])
    finally:
        os.close(out)
    return paths
