"""An image unit's layers, in the layer store before its launch (images/store.py).

Unpacking is the slow part of a first start (a 50 MB image: seconds of gunzip, sha256 and
file creation), and the daemon's single event loop must not stop for it: every other unit's
exits, health checks and API requests wait on that loop. So the daemon runs the unpack helper
(`python -m supervisor.images unpack`) as a child process and waits for its exit through a
pidfd (linux/childwait.py); when every layer is already in the store, the launch goes ahead
after a few stat calls, with no process at all. The helper's one-line error (the file at fault
and why) becomes `launch-error:image: ...`. `sandboxctl images` (sizes on disk) and its
`prune` go through the same helper (`HelperStore`, the engine's `ImageStore` port).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable

from supervisor.errors import ImageStoreError, LaunchError
from supervisor.images.store import LayerStore
from supervisor.linux import faultpoint
from supervisor.linux.childwait import wait_child
from supervisor.log import get_logger
from supervisor.unit.spec import UnitSpec

log = get_logger()

STAGE = "image"
# Unpacking gigabytes on a slow disk takes minutes; this only bounds a wedged helper.
TIMEOUT = 1800.0
MESSAGE_LIMIT = 2000
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class HelperError(Exception):
    """The helper failed; the message is its last line on stderr."""


async def _helper(args: list[str], timeout: float) -> str:
    """Run `python -m supervisor.images ARGS...`; its stdout. HelperError on failure."""
    out = os.memfd_create("image-helper-out", os.MFD_CLOEXEC)
    err = os.memfd_create("image-helper-err", os.MFD_CLOEXEC)
    try:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "supervisor.images", *args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd="/",
                env=_helper_env(),
            )  # fmt: skip
        except OSError as exc:
            raise HelperError(f"cannot run the image helper: {exc}") from None
        status = await wait_child(proc, timeout)
        if status is None:
            raise HelperError(f"the image helper took longer than {timeout:g}s; killed")
        if status != 0:
            text = _read(err, 4 * MESSAGE_LIMIT).strip()
            message = text.splitlines()[-1] if text else f"exit status {status}"
            raise HelperError(message[:MESSAGE_LIMIT])
        return _read(out, 64 << 20)
    finally:
        os.close(out)
        os.close(err)


def _helper_env() -> dict[str, str]:
    """A clean environment, but for a reliability test's fault point, which must reach the
    helper to freeze it mid-unpack (linux/faultpoint.py)."""
    env = {"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8"}
    if (point := os.environ.get(faultpoint.ENV)) is not None:
        env[faultpoint.ENV] = point
    return env


def _read(fd: int, limit: int) -> str:
    size = os.fstat(fd).st_size
    return os.pread(fd, min(size, limit), 0).decode("utf-8", "replace")


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
    missing = sum(not os.path.isdir(path) for path in paths)
    if not missing:
        return paths
    log.info("image.unpacking", unit=spec.name, image=image.ref, layers=missing)
    began = time.monotonic()
    try:
        await _helper(["unpack", store_root, json.dumps(image.to_json())], timeout)
    except HelperError as exc:
        log.warning("image.unpack_failed", unit=spec.name, image=image.ref, error=str(exc))
        raise LaunchError(spec.name, STAGE, str(exc)) from None
    log.info("image.unpacked", unit=spec.name, image=image.ref,
             seconds=round(time.monotonic() - began, 3))  # fmt: skip
    return paths


class HelperStore:
    """The engine's `ImageStore` port: the layer store's slow work in the helper process."""

    def __init__(self, store_root: str, timeout: float = TIMEOUT) -> None:
        self.store_root, self.timeout = store_root, timeout

    async def stored(self) -> dict[str, int]:
        try:
            return dict(json.loads(await _helper(["usage", self.store_root], self.timeout)))
        except HelperError as exc:
            raise ImageStoreError(f"layer store {self.store_root}: {exc}") from None

    async def prune(self, in_use: Iterable[str]) -> dict[str, int]:
        args = ["prune", self.store_root, *sorted(set(in_use))]
        try:
            return dict(json.loads(await _helper(args, self.timeout)))
        except HelperError as exc:
            raise ImageStoreError(f"layer store {self.store_root}: {exc}") from None
