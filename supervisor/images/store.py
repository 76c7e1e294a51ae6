"""The content-addressed layer store: `<data_dir>/images/`.

    images/            0700 (inside data_dir, 0700 too: layers hold the image's setuid files)
      layers/<hex>/    one unpacked layer, named by its diff id (sha256 of the uncompressed
                       tar), shared by every unit and image that has that layer
      tmp/             layers being unpacked; renamed into layers/ only when complete

A layer directory is written once, by unpack.py in the helper process (__main__.py), and never
changed afterwards: sandboxes see it only as an overlayfs lower layer, read-only, so writes go
to their own upper layer. Because its name is its digest and the rename is atomic, two
concurrent unpacks of one layer both succeed and one copy stays. Unpacks hold `images/.lock`
shared and a prune holds it exclusively (flock), so a prune never takes a layer that is being
unpacked from under its unpack (its temporary directory, or the layer just renamed in).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from supervisor.images.oci import Image, ImageError, open_layers
from supervisor.images.unpack import DEFAULT_LIMITS, Limits, UnsafeLayer, unpack
from supervisor.linux import faultpoint

PRIVATE = 0o700
STORE_DIR = "images"  # in data_dir


@dataclass(frozen=True)
class StoredLayer:
    diff_id: str
    path: str
    size: int  # bytes on disk, each inode counted once


class LayerStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.layers = os.path.join(root, "layers")
        self.tmp = os.path.join(root, "tmp")

    def layer_path(self, diff_id: str) -> str:
        return os.path.join(self.layers, diff_id.removeprefix("sha256:"))

    def has(self, diff_id: str) -> bool:
        return os.path.isdir(self.layer_path(diff_id))

    def _dirs(self) -> None:
        for path in (self.root, self.layers, self.tmp):
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, PRIVATE)
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                raise ImageError(path, "not a directory (the layer store follows no symlink)")
            os.chmod(path, PRIVATE)

    @contextlib.contextmanager
    def _locked(self, how: int) -> Iterator[None]:
        fd = os.open(os.path.join(self.root, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, how)
            yield
        finally:
            os.close(fd)

    def ensure(self, image: Image, limits: Limits = DEFAULT_LIMITS) -> list[str]:
        """Every layer of `image` unpacked (the missing ones now); their directories, bottom
        layer first. ImageError names the layer at fault; nothing of it is left behind."""
        self._dirs()
        self._clear_leftovers()
        with self._locked(fcntl.LOCK_SH):
            self._ensure(image, limits)
        return [self.layer_path(layer.diff_id) for layer in image.layers]

    def _clear_leftovers(self) -> None:
        """Remove what interrupted unpacks left in tmp/ (a helper killed with its daemon), but
        only while no other helper holds the store: a running unpack's tmp dir is its own."""
        fd = os.open(os.path.join(self.root, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another unpack or a prune runs: the next one clears
            for name in os.listdir(self.tmp):
                shutil.rmtree(os.path.join(self.tmp, name), ignore_errors=True)
        finally:
            os.close(fd)

    def _ensure(self, image: Image, limits: Limits) -> None:
        missing = {layer.diff_id for layer in image.layers if not self.has(layer.diff_id)}
        if missing:
            for layer, where, opened in open_layers(image):
                if layer.diff_id not in missing:
                    continue
                missing.discard(layer.diff_id)  # a layer listed twice is unpacked once
                tmp = tempfile.mkdtemp(prefix=layer.diff_id[7:19] + ".", dir=self.tmp)
                try:
                    try:
                        unpack(opened.tar, tmp, limits)  # type: ignore[arg-type]
                    except UnsafeLayer as exc:
                        raise ImageError(where, f"refused: {exc}") from None
                    except (OSError, EOFError, ValueError) as exc:
                        raise ImageError(where, f"cannot unpack: {exc}") from None
                    opened.check(layer, where)
                    faultpoint.reached(faultpoint.IMAGE_LAYER_UNPACKED, layer.diff_id)
                    os.chmod(tmp, 0o755)  # the layer's root: the merged root's mode
                    try:
                        os.rename(tmp, self.layer_path(layer.diff_id))
                    except OSError:  # unpacked meanwhile by another launch: keep that one
                        if not self.has(layer.diff_id):
                            raise
                finally:
                    if os.path.lexists(tmp):
                        shutil.rmtree(tmp, ignore_errors=True)

    def stored(self) -> list[StoredLayer]:
        """Every complete layer in the store, with its size on disk."""
        try:
            names = sorted(os.listdir(self.layers))
        except FileNotFoundError:
            return []
        return [
            StoredLayer("sha256:" + name, path, _disk_usage(path))
            for name in names
            if len(name) == 64 and os.path.isdir(path := os.path.join(self.layers, name))
        ]

    def prune(self, in_use: Iterable[str]) -> list[StoredLayer]:
        """Remove every layer no id in `in_use` names, and leftovers of interrupted unpacks;
        returns what was removed."""
        if not os.path.isdir(self.root):
            return []
        self._dirs()
        with self._locked(fcntl.LOCK_EX):
            return self._prune(set(in_use))

    def _prune(self, keep: set[str]) -> list[StoredLayer]:
        removed = [layer for layer in self.stored() if layer.diff_id not in keep]
        for layer in removed:
            # Renamed away first, so no launch can pick up a half-removed layer.
            doomed = os.path.join(self.tmp, "prune." + os.path.basename(layer.path))
            os.rename(layer.path, doomed)
            shutil.rmtree(doomed)
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.tmp):
                shutil.rmtree(os.path.join(self.tmp, name), ignore_errors=True)
        return removed


def _disk_usage(path: str) -> int:
    seen: set[int] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total
