"""Reading one unit file (or drop-in) safely: bytes, UTF-8 text, TOML table, each problem a
`UnitError` naming the file.

No symlink is followed (O_NOFOLLOW): a link would let whoever controls its target change a unit.
The one link allowed, an instance's to its own template, is resolved by instances.py, which
then reads the template itself.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tomllib

from supervisor.unit import compose
from supervisor.unit.diagnostics import KEY_FILE, KEY_SYNTAX, UnitError, UnitFileError

SUFFIX = ".toml"
# Far above any real unit (a few hundred bytes); keeps a stray log file from being parsed.
MAX_FILE_SIZE = 1 << 20
EMPTY_MESSAGE = "empty file: a unit needs at least [service] exec = [...]"
SYMLINK_MESSAGE = (
    "is a symlink: unit files and drop-ins are not followed through symlinks, except an "
    "instance's link to its own template in the same directory (web@8080.toml -> web@.toml)"
)
_TOML_WHERE = re.compile(
    r"^(?P<msg>.*) \(at (?:line (?P<line>\d+), column (?P<col>\d+)|end of document)\)$"
)


def file_error(path: str, message: str, line: int | None = None) -> UnitFileError:
    return UnitFileError([UnitError(path, KEY_FILE, message, line)])


def strerror(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def read_unit_bytes(path: str) -> tuple[bytes, os.stat_result]:
    """The file's bytes and stat; refuses what is not a regular file or is too large, and a
    symlink (the one link allowed, an instance's to its template, is resolved by the caller).

    O_NONBLOCK: a FIFO named `x.toml` must not hang the daemon's reload; it is then refused by
    the S_ISREG check.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise file_error(path, SYMLINK_MESSAGE) from None
        raise file_error(path, f"cannot read: {strerror(exc)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise file_error(path, "not a regular file")
        if st.st_size > MAX_FILE_SIZE:
            raise file_error(path, f"file too large ({st.st_size} bytes; the limit is 1M)")
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_FILE_SIZE:  # grew after fstat
                raise file_error(path, "file too large (the limit is 1M)")
        return b"".join(chunks), st
    except OSError as exc:
        raise file_error(path, f"cannot read: {strerror(exc)}") from None
    finally:
        os.close(fd)


def decode_text(path: str, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise file_error(
            path, f"not valid UTF-8 (byte 0x{bad}): unit files are UTF-8 text", line
        ) from None
    # Editors on other systems may write a byte order mark; TOML itself does not allow one.
    return text.removeprefix("\ufeff")


def parse_toml(path: str, text: str) -> dict[str, object]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "... (at line 3, column 7)"; that becomes the FILE:3:7: prefix.
        where = _TOML_WHERE.match(str(exc))
        line = column = None
        if where is None:
            message = str(exc)
        elif where["line"] is None:
            message = f"{where['msg']} (at end of file)"
        else:
            message, line, column = where["msg"], int(where["line"]), int(where["col"])
        message = "invalid TOML: " + message[:1].lower() + message[1:]
        raise UnitFileError([UnitError(path, KEY_SYNTAX, message, line, column)]) from None
    except RecursionError:
        raise UnitFileError(
            [UnitError(path, KEY_SYNTAX, "invalid TOML: nested too deeply")]
        ) from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise UnitFileError([UnitError(path, KEY_SYNTAX, f"invalid TOML: {exc}")]) from None


def read_source(path: str) -> compose.Source:
    """One file of a composed unit, read and parsed (UnitFileError naming it otherwise)."""
    data, _ = read_unit_bytes(path)
    text = decode_text(path, data)
    return compose.Source(path, text, parse_toml(path, text))
