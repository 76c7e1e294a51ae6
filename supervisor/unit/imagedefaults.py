"""An image's config as a unit's defaults, applied to the parsed TOML before validation.

What the unit file says wins, key by key, as with `docker run`: `exec` replaces the image's
Entrypoint and Cmd together (sandboxd has no PATH lookup, so exec[0] is always a full path the
unit states), `env` is merged over the image's Env, and `workdir`, `user` (and `group`, from a
`user:group` User) and `stop_signal` come from WorkingDir, User and StopSignal when the unit
leaves them out. The image is read here, at load time: only its small JSON files (index,
manifest, config), each checked against its digest; layer blobs are verified when unpacked.
"""

from __future__ import annotations

from typing import Any

from supervisor.images.oci import Image, ImageError, read_image
from supervisor.images.reference import parse_ref

KEY = "sandbox.image"


class ImageDefaultsError(Exception):
    """The image cannot serve as this unit's root; `key` is where the message belongs."""

    def __init__(self, key: str, message: str) -> None:
        self.key, self.message = key, message
        super().__init__(message)


def image_value(data: dict[str, Any]) -> str | None:
    sandbox = data.get("sandbox")
    value = sandbox.get("image") if isinstance(sandbox, dict) else None
    return value if isinstance(value, str) else None


def apply_image(data: dict[str, Any], value: str) -> tuple[dict[str, Any], Image | None]:
    """`data` (a parsed unit file) with the image's defaults filled in, and the image.

    A malformed `image` value returns (data, None): the schema reports it with its own message.
    ImageDefaultsError when the image cannot be read or gives no command.
    """
    try:
        ref = parse_ref(value)
    except ValueError:
        return data, None
    try:
        image = read_image(ref)
    except ImageError as exc:
        raise ImageDefaultsError(KEY, str(exc)) from None
    service = data.get("service", {})
    if not isinstance(service, dict):
        return data, image  # the schema reports the wrong type
    service = dict(service)
    config = image.config
    if "exec" not in service:
        argv = [*config.entrypoint, *config.cmd]
        if not argv:
            raise ImageDefaultsError(
                KEY, f"{image.ref}: the image has no Entrypoint or Cmd; set service.exec"
            )
        if not argv[0].startswith("/"):
            raise ImageDefaultsError(
                KEY,
                f"{image.ref}: the image's command starts with {argv[0]!r}, not an absolute "
                "path (sandboxd does no PATH lookup); set service.exec",
            )
        service["exec"] = argv
    if config.env:
        env = service.get("env", {})
        if isinstance(env, dict):
            service["env"] = {**dict(config.env), **env}
    if config.workdir and "workdir" not in service:
        service["workdir"] = config.workdir
    if config.user and "user" not in service:
        user, _, group = config.user.partition(":")
        service["user"] = user
        if group and "group" not in service:
            service["group"] = group
    if config.stop_signal and "stop_signal" not in service:
        service["stop_signal"] = config.stop_signal
    return {**data, "service": service}, image
