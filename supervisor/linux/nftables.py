"""nft(8) from the daemon's event loop: one JSON batch per call, committed as one transaction.

Why the nft binary and not netlink: nf_tables' netlink encoding of rules (registers,
expressions, set descriptors) is large and differs between versions; `nft -j` takes the
documented JSON schema (libnftables-json(5)) and sends the whole batch as one transaction, all
or nothing, which is what lets a caller replace a port's rules without a moment half-filtered.

nft runs as a child process waited for on the loop (childwait.py). The batch goes in and the
messages come out through memfds, not pipes: nft reads its whole input at once and nobody ever
blocks on a full pipe, whatever the size of the batch.

The binary is looked up in root's system directories only, never in the daemon's PATH.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

from supervisor.errors import SupervisorError
from supervisor.linux.childwait import wait_child

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TIMEOUT = 30.0  # nft takes milliseconds; this only bounds a wedged one
MESSAGE_LIMIT = 2000  # characters of nft's output kept in an error


class NftablesError(SupervisorError):
    """nft is missing, could not run, or refused the batch (the message says which)."""


def find_nft() -> str:
    path = shutil.which("nft", path=SYSTEM_PATH)
    if path is None:
        raise NftablesError(f"nft(8) not found in {SYSTEM_PATH}; install the nftables package")
    return path


@contextlib.contextmanager
def _memfd(name: str, data: bytes = b"") -> Iterator[int]:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        if data:
            os.write(fd, data)  # a memfd takes it all in one write
            os.lseek(fd, 0, os.SEEK_SET)
        yield fd
    finally:
        os.close(fd)


async def run(
    commands: Sequence[dict[str, Any]], *, nft: str | None = None, timeout: float = TIMEOUT
) -> None:
    """Run `commands` (libnftables-json(5) command objects) as one nft transaction.

    NftablesError if nft fails (nothing of the batch is applied then), cannot be started, or
    takes longer than `timeout` (it is killed; whether the kernel committed is unknown then).
    """
    path = nft or find_nft()
    batch = json.dumps({"nftables": list(commands)}).encode()
    with _memfd("nft-batch", batch) as batch_fd, _memfd("nft-output") as out_fd:
        try:
            proc = subprocess.Popen(
                [path, "-j", "-f", "-"],
                stdin=batch_fd,
                stdout=out_fd,
                stderr=out_fd,
                cwd="/",
                env={"PATH": SYSTEM_PATH, "LC_ALL": "C"},
            )
        except OSError as exc:
            raise NftablesError(f"cannot run {path}: {exc.strerror or exc}") from None
        status = await wait_child(proc, timeout)
        if status is None:
            raise NftablesError(f"{path} did not finish within {timeout:g}s; killed")
        if status != 0:
            raise NftablesError(f"{path} failed ({_how(status)}): {_output(out_fd)}")


def _how(returncode: int) -> str:
    return f"exit code {returncode}" if returncode >= 0 else f"signal {-returncode}"


def _output(fd: int) -> str:
    size = os.fstat(fd).st_size
    text = os.pread(fd, min(size, 4 * MESSAGE_LIMIT), 0).decode("utf-8", "replace")
    # nft -j names no location ("internal:0:0-0: Error: ..."); keep the distinct messages.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = "; ".join(dict.fromkeys(lines)) or "no message"
    return message[:MESSAGE_LIMIT]
