"""`[credentials]`: secrets a service reads from files in `$CREDENTIALS_DIRECTORY`.

The model keeps where a secret comes from, never lets its value out: a `value` serialises as
HIDDEN, so the spec's JSON form (status, the API, state files) cannot carry it, and the spec
hash covers the contents through `digest()` instead: an HMAC under the daemon's own key (kept
in data_dir, root-only), so a spec hash seen in `status` or a state file cannot be used to test
guesses of a short secret offline. The daemon reads the sources as root when
a unit is loaded (to validate and hash) and again at every start (`read_all`), so a rotated
file is what the next run sees.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer, model_validator
from pydantic_core import PydanticCustomError

from supervisor.linux import safefs

# A credential is a file name inside the directory: no slash, no leading dot ("." and ".."),
# short enough for any filesystem.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# Where the service finds them (a private ramfs, child/credentials.py) and the variable that
# says so, systemd's name for it: programs written for LoadCredential= work unchanged.
DIRECTORY = "/run/credentials"
ENV = "CREDENTIALS_DIRECTORY"
MAX_SIZE = 1 << 20  # per credential: it lives in unswappable memory
HIDDEN = "(hidden)"
KEY_FILE = "credentials.key"  # in data_dir: persistent, so hashes survive daemon restarts
KEY_SIZE = 32
# The launch-error stage of a credential that cannot be read at start, or put in place.
STAGE = "credentials"


def _hide(value: str | None) -> str | None:
    return None if value is None else HIDDEN


class Credential(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    file: str | None = None
    value: Annotated[str | None, PlainSerializer(_hide)] = None

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise PydanticCustomError(
                "unit_value",
                'a credential is a table: { file = "/path" } or { value = "..." }',
            )
        if "env" in data:
            raise PydanticCustomError(
                "unit_value",
                "{message}",
                {
                    "message": "env is refused: sandboxd passes no secret from its own "
                    'environment; use file = "/path" (readable by root only)',
                    "key": "env",
                },
            )
        # A null is what the JSON form (a state file) holds for the source not used.
        given = [key for key in ("file", "value") if data.get(key) is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "unit_value", 'needs exactly one of file = "/path" or value = "..."'
            )
        file = data.get("file")
        if isinstance(file, str) and (not file.startswith("/") or "\0" in file):
            raise PydanticCustomError(
                "unit_value", "{message}", {"message": f"{file!r} is not an absolute path",
                                            "key": "file"},
            )  # fmt: skip
        return data


class CredentialError(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message


def check_name(name: str) -> None:
    if not NAME.fullmatch(name) or name.endswith("."):
        raise ValueError(
            f"credential name {name!r}: letters, digits, '_', '.' and '-', not starting with "
            "'.' or '-', at most 128 characters (it is a file name)"
        )


def read(name: str, cred: Credential) -> bytes:
    """The credential's bytes, read as the daemon (root); CredentialError naming the key."""
    if cred.value is not None:
        data = cred.value.encode()
        key = f"credentials.{name}.value"
    else:
        assert cred.file is not None
        key = f"credentials.{name}.file"
        try:
            # O_NONBLOCK: a FIFO planted at the path must not hang the daemon's loop.
            fd = os.open(cred.file, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as err:
            raise CredentialError(key, f"cannot read {cred.file}: {err.strerror}") from None
        try:
            st = os.fstat(fd)
            if not (st.st_mode & 0o170000) == 0o100000:
                raise CredentialError(key, f"{cred.file} is not a regular file")
            data = os.read(fd, MAX_SIZE + 1)
            while len(data) <= MAX_SIZE and (more := os.read(fd, MAX_SIZE + 1 - len(data))):
                data += more
        except OSError as err:
            raise CredentialError(key, f"cannot read {cred.file}: {err.strerror}") from None
        finally:
            os.close(fd)
    if len(data) > MAX_SIZE:
        raise CredentialError(key, f"larger than {MAX_SIZE >> 20} MiB")
    return data


def read_all(credentials: dict[str, Credential]) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, read(name, cred)) for name, cred in sorted(credentials.items()))


# The key digests are made with. A process that never sets one (`sandboxctl validate`, `cat`)
# gets a random one: its hashes are compared with no other process's and shown nowhere.
_key = os.urandom(KEY_SIZE)


def use_key(key: bytes) -> None:
    global _key  # noqa: PLW0603 - one key per process, set once by the daemon at start
    _key = key


def daemon_key(data_dir: str | os.PathLike[str]) -> bytes:
    """The daemon's digest key, made on first use: 32 random bytes in data_dir/KEY_FILE, 0600.
    Kept across restarts and reboots, so an unchanged secret keeps its unit's hash (a new key
    would restart every unit with credentials at the next reload)."""
    with safefs.directory(data_dir) as dir_fd:
        try:
            key = safefs.read_owned(dir_fd, KEY_FILE)
        except FileNotFoundError:
            key = b""
        if len(key) != KEY_SIZE:  # absent, or torn by hand: a new one
            key = os.urandom(KEY_SIZE)
            safefs.write_atomic(dir_fd, KEY_FILE, key, 0o600)
    return key


def digest(contents: tuple[tuple[str, bytes], ...]) -> str:
    """What the spec hash covers: a keyed digest of every name and content, never a value."""
    h = hmac.new(_key, digestmod=hashlib.sha256)
    for name, data in contents:
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()
