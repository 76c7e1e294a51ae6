"""Reading an image's metadata: which layers, in which order, and its config.

Two on-disk forms, both what skopeo writes without a registry or daemon:
- an OCI image layout (image-spec `image-layout.md`): `index.json` names manifests by their
  `org.opencontainers.image.ref.name` annotation (the tag), each blob lives at
  `blobs/sha256/<hex>`;
- a `docker save` archive (`docker-archive:`): a tarball whose `manifest.json` lists the
  config file and the layer tarballs.

Every small blob read here (index, manifest, config) is checked against its digest. Layer blobs
are large, so here only their presence and size are checked; their digests are verified while
they are unpacked (unpack.py), or here with `verify_layers=True` (`sandboxctl validate`).

A layer is identified by its *diff id*, the digest of its uncompressed tar (the config's
`rootfs.diff_ids`): that is the same for the OCI and the archive form of one layer, whatever
the compression, so the store keeps one copy for both.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import platform
import re
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, Any, cast

from supervisor.errors import SupervisorError
from supervisor.images.reference import ImageRef

REF_NAME = "org.opencontainers.image.ref.name"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFESTS = frozenset(
    {"application/vnd.oci.image.manifest.v1+json",
     "application/vnd.docker.distribution.manifest.v2+json"}
)  # fmt: skip
CONFIGS = frozenset(
    {"application/vnd.oci.image.config.v1+json",
     "application/vnd.docker.container.image.v1+json"}
)  # fmt: skip
# Layer media types and how each is compressed. zstd is not supported: it would need a
# third-party decompressor for a form skopeo only writes when asked to
# (`--dest-compress-format zstd`).
LAYERS = {
    "application/vnd.oci.image.layer.v1.tar": None,
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": None,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
}
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MAX_JSON = 4 << 20  # an index, manifest or config is kilobytes; refuse anything huge
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}  # fmt: skip


class ImageError(SupervisorError):
    """The image cannot be used; `where` is the file (or archive member) at fault."""

    def __init__(self, where: str, message: str) -> None:
        self.where, self.message = where, message
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Layer:
    diff_id: str  # sha256 of the uncompressed tar: the store's key
    source: str  # blob path in the layout, or member name in the archive
    blob_digest: str | None  # the compressed blob's digest (OCI); None: the source is the tar
    compression: str | None  # "gzip" or None
    size: int  # of the blob as stored


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    user: str = ""
    stop_signal: str = ""
    exposed_ports: tuple[str, ...] = ()


@dataclass(frozen=True)
class Image:
    ref: str  # as written in the unit, normalised
    kind: str  # "oci" or "docker-archive"
    path: str
    digest: str  # the manifest's digest (OCI) or the config's (archive): what `reload` compares
    layers: tuple[Layer, ...]
    config: ImageConfig = field(default_factory=ImageConfig)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Image:
        config = data["config"]
        return cls(
            ref=data["ref"], kind=data["kind"], path=data["path"], digest=data["digest"],
            layers=tuple(Layer(**layer) for layer in data["layers"]),
            config=ImageConfig(
                entrypoint=tuple(config["entrypoint"]), cmd=tuple(config["cmd"]),
                env=tuple((k, v) for k, v in config["env"]), workdir=config["workdir"],
                user=config["user"], stop_signal=config["stop_signal"],
                exposed_ports=tuple(config["exposed_ports"]),
            ),
        )  # fmt: skip


def read_image(ref: ImageRef, *, verify_layers: bool = False) -> Image:
    """The image `ref` names; ImageError naming the file and what is wrong with it."""
    if ref.kind == "oci":
        return _OciLayout(ref).read(verify_layers)
    return _Archive(ref).read(verify_layers)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(where: str, data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ImageError(where, f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ImageError(where, "not a JSON object")
    return value


def _string_list(where: str, key: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageError(where, f"{key}: not a list of strings")
    return tuple(value)


def parse_config(where: str, data: dict[str, Any]) -> tuple[ImageConfig, tuple[str, ...]]:
    """The runtime defaults and the diff ids of an image config (image-spec `config.md`)."""
    conf = data.get("config") or {}
    if not isinstance(conf, dict):
        raise ImageError(where, "config: not an object")
    env: list[tuple[str, str]] = []
    for item in _string_list(where, "config.Env", conf.get("Env")):
        key, sep, value = item.partition("=")
        if sep and key:
            env.append((key, value))
    ports = conf.get("ExposedPorts") or {}
    if not isinstance(ports, dict):
        raise ImageError(where, "config.ExposedPorts: not an object")
    rootfs = data.get("rootfs") or {}
    diff_ids = _string_list(where, "rootfs.diff_ids", rootfs.get("diff_ids"))
    for diff_id in diff_ids:
        if not DIGEST.fullmatch(diff_id):
            raise ImageError(where, f"rootfs.diff_ids: unsupported digest {diff_id!r}")
    config = ImageConfig(
        entrypoint=_string_list(where, "config.Entrypoint", conf.get("Entrypoint")),
        cmd=_string_list(where, "config.Cmd", conf.get("Cmd")),
        env=tuple(env),
        workdir=str(conf.get("WorkingDir") or ""),
        user=str(conf.get("User") or ""),
        stop_signal=str(conf.get("StopSignal") or ""),
        exposed_ports=tuple(sorted(str(p) for p in ports)),
    )
    return config, diff_ids


def _ref_name(desc: dict[str, Any]) -> str | None:
    annotations = desc.get("annotations")
    tag = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    return tag if isinstance(tag, str) else None


def _host_platform(desc: dict[str, Any]) -> bool:
    plat = desc.get("platform") or {}
    arch = _ARCH.get(platform.machine(), platform.machine())
    return bool(plat.get("os", "linux") == "linux" and plat.get("architecture", arch) == arch)


class _OciLayout:
    def __init__(self, ref: ImageRef) -> None:
        self.ref, self.root = ref, ref.path

    def _blob_path(self, where: str, digest: object) -> str:
        if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
            raise ImageError(where, f"unsupported digest {digest!r} (sha256 only)")
        return f"blobs/sha256/{digest.removeprefix('sha256:')}"

    def _read(self, name: str, limit: int = MAX_JSON) -> bytes:
        path = os.path.join(self.root, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise ImageError(path, f"cannot read: {(exc.strerror or str(exc)).lower()}") from None
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ImageError(path, f"larger than {limit} bytes")
        return data

    def _blob(self, where: str, desc: object, types: frozenset[str] | None) -> bytes:
        if not isinstance(desc, dict):
            raise ImageError(where, "a descriptor is not an object")
        media = desc.get("mediaType")
        if types is not None and media not in types:
            raise ImageError(where, f"unsupported media type {media!r}")
        name = self._blob_path(where, desc.get("digest"))
        data = self._read(name)
        if _sha256(data) != desc["digest"]:
            raise ImageError(
                os.path.join(self.root, name),
                f"digest does not match: {where} says {desc['digest']}, the blob is "
                f"{_sha256(data)}",
            )
        return data

    def _manifest_desc(self) -> dict[str, Any]:
        index_path = os.path.join(self.root, "index.json")
        index = _json(index_path, self._read("index.json"))
        manifests = index.get("manifests")
        if not isinstance(manifests, list):
            raise ImageError(index_path, "manifests: not a list")
        named = [(_ref_name(m), m) for m in manifests if isinstance(m, dict)]
        tagged = [m for tag, m in named if tag == self.ref.tag]
        if not tagged:
            tags = sorted(tag for tag, _ in named if tag)
            have = f"the tags there are {', '.join(tags)}" if tags else "it names no tag"
            raise ImageError(index_path, f"no tag {self.ref.tag!r} ({have})")
        desc: dict[str, Any] = tagged[0]
        if desc.get("mediaType") in (OCI_INDEX, DOCKER_LIST):
            # A multi-platform image: the manifest for this host's architecture.
            where = os.path.join(self.root, self._blob_path(index_path, desc.get("digest")))
            nested = _json(where, self._blob(index_path, desc, None)).get("manifests") or []
            picks = [m for m in nested if isinstance(m, dict) and _host_platform(m)]
            if not picks:
                raise ImageError(where, "no manifest for this host's platform")
            desc = picks[0]
        return desc

    def read(self, verify_layers: bool) -> Image:
        index_path = os.path.join(self.root, "index.json")
        desc = self._manifest_desc()
        manifest_bytes = self._blob(index_path, desc, MANIFESTS)
        manifest_path = os.path.join(self.root, self._blob_path(index_path, desc["digest"]))
        manifest = _json(manifest_path, manifest_bytes)
        config_path = os.path.join(
            self.root, self._blob_path(manifest_path, (manifest.get("config") or {}).get("digest"))
        )
        config_data = _json(config_path, self._blob(manifest_path, manifest.get("config"), CONFIGS))
        config, diff_ids = parse_config(config_path, config_data)
        descs = manifest.get("layers")
        if not isinstance(descs, list):
            raise ImageError(manifest_path, "layers: not a list")
        if len(descs) != len(diff_ids):
            raise ImageError(
                config_path,
                f"rootfs.diff_ids has {len(diff_ids)} entries, the manifest {len(descs)} layers",
            )
        layers = []
        for i, (layer, diff_id) in enumerate(zip(descs, diff_ids, strict=True)):
            where = f"{manifest_path}: layers[{i}]"
            media = layer.get("mediaType") if isinstance(layer, dict) else None
            if media not in LAYERS:
                raise ImageError(where, f"unsupported media type {media!r}")
            blob = self._blob_path(where, layer.get("digest"))
            try:
                size = os.stat(os.path.join(self.root, blob)).st_size
            except OSError as exc:
                raise ImageError(
                    os.path.join(self.root, blob), (exc.strerror or "").lower()
                ) from None
            if size != layer.get("size"):
                raise ImageError(where, f"size {layer.get('size')} but the blob has {size} bytes")
            layers.append(Layer(diff_id, blob, layer["digest"], LAYERS[media], size))
        image = Image(str(self.ref), "oci", self.root, str(desc["digest"]), tuple(layers), config)
        if verify_layers:
            verify(image)
        return image


class _Archive:
    def __init__(self, ref: ImageRef) -> None:
        self.ref, self.path = ref, ref.path

    def read(self, verify_layers: bool) -> Image:
        with _open_archive(self.path) as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}

            def member(name: str) -> bytes:
                found = members.get(name.removeprefix("./"))
                if found is None or found.size > MAX_JSON:
                    raise ImageError(f"{self.path}: {name}", "missing from the archive")
                f = tar.extractfile(found)
                assert f is not None  # a regular file
                return f.read()

            raw = (
                json.loads(member("manifest.json") or b"null")
                if "manifest.json" in members
                else None
            )
            if not isinstance(raw, list) or len(raw) != 1 or not isinstance(raw[0], dict):
                raise ImageError(
                    f"{self.path}: manifest.json",
                    "missing, or not a list of exactly one image (save one image per archive)",
                )
            entry = raw[0]
            config_name = str(entry.get("Config"))
            config_bytes = member(config_name)
            where = f"{self.path}: {config_name}"
            config, diff_ids = parse_config(where, _json(where, config_bytes))
            names = _string_list(f"{self.path}: manifest.json", "Layers", entry.get("Layers"))
            if len(names) != len(diff_ids):
                raise ImageError(where, f"rootfs.diff_ids has {len(diff_ids)} entries, the "
                                 f"archive {len(names)} layers")  # fmt: skip
            layers = []
            for name, diff_id in zip(names, diff_ids, strict=True):
                found = members.get(name.removeprefix("./"))
                if found is None:
                    raise ImageError(f"{self.path}: {name}", "missing from the archive")
                layers.append(Layer(diff_id, found.name, None, None, found.size))
        image = Image(str(self.ref), "docker-archive", self.path, _sha256(config_bytes),
                      tuple(layers), config)  # fmt: skip
        if verify_layers:
            verify(image)
        return image


def _open_archive(path: str) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:")  # docker save writes an uncompressed tar
    except (OSError, tarfile.TarError) as exc:
        raise ImageError(path, f"cannot read the archive: {exc}") from None


@dataclass
class HashingReader:
    """Reads through `raw`, hashing every byte (what was read is what gets verified)."""

    raw: IO[bytes]
    hasher: Any = field(default_factory=hashlib.sha256)

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hasher.update(data)
        return data

    def drain(self) -> str:
        while self.read(1 << 20):
            pass
        return "sha256:" + str(self.hasher.hexdigest())


@dataclass
class OpenLayer:
    """A layer's blob (`blob`, hashed) and its uncompressed tar stream (`tar`, hashed)."""

    blob: HashingReader
    tar: HashingReader
    closers: list[IO[bytes]]

    def check(self, layer: Layer, where: str) -> None:
        """After the tar was read: both digests, the rest of each stream included."""
        tar_digest = self.tar.drain()
        blob_digest = self.blob.drain()
        if layer.blob_digest is not None and blob_digest != layer.blob_digest:
            raise ImageError(where, f"digest does not match: expected {layer.blob_digest}, "
                             f"the blob is {blob_digest}")  # fmt: skip
        if tar_digest != layer.diff_id:
            raise ImageError(where, f"diff id does not match: expected {layer.diff_id}, the "
                             f"uncompressed layer is {tar_digest}")  # fmt: skip

    def close(self) -> None:
        for f in reversed(self.closers):
            f.close()


def open_layers(image: Image) -> Iterator[tuple[Layer, str, OpenLayer]]:
    """Each layer, bottom first, opened for reading: (layer, where, streams)."""
    archive = _open_archive(image.path) if image.kind == "docker-archive" else None
    try:
        for layer in image.layers:
            if archive is not None:
                where = f"{image.path}: {layer.source}"
                raw = archive.extractfile(layer.source)
                if raw is None:
                    raise ImageError(where, "not a file in the archive")
            else:
                where = os.path.join(image.path, layer.source)
                try:
                    raw = open(where, "rb")  # noqa: SIM115 (OpenLayer.close closes it)
                except OSError as exc:
                    raise ImageError(
                        where, f"cannot read: {(exc.strerror or '').lower()}"
                    ) from None
            blob = HashingReader(raw)
            closers: list[IO[bytes]] = [raw]
            stream = cast(IO[bytes], blob)  # it has read(), all tarfile and gzip need
            if layer.compression == "gzip" or (layer.compression is None and _gzipped(raw)):
                stream = cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb"))
                closers.append(stream)
            opened = OpenLayer(blob, HashingReader(stream), closers)
            try:
                yield layer, where, opened
            finally:
                opened.close()
    finally:
        if archive is not None:
            archive.close()


def _gzipped(raw: IO[bytes]) -> bool:
    """An archive's layer may be stored compressed under a .tar name; sniff the magic."""
    pos = raw.tell()
    magic = raw.read(2)
    raw.seek(pos)
    return magic == b"\x1f\x8b"


def verify(image: Image) -> None:
    """Read every layer blob in full and check its digests (slow: for `validate`)."""
    for layer, where, opened in open_layers(image):
        opened.check(layer, where)
