"""The launch protocol between the daemon, the launcher child and the sandbox's PID 1.

Two pipes, both close-on-exec:
  sync pipe  launcher/PID 1 -> daemon   newline-terminated JSON messages (each < PIPE_BUF, so
                                          a write is atomic); EOF once every writer is gone
  go pipe    daemon -> PID 1             one byte

| # | message      | sender        | receiver | expected reply / what follows                     |
|---|--------------|---------------|----------|---------------------------------------------------|
| 1 | PidReport    | launcher      | daemon   | none; the launcher exits, the daemon reaps it     |
| 2 | Go (b"G")    | daemon        | PID 1    | ChildError, or EOF on the sync pipe (= exec done) |
| - | ChildError   | launcher or   | daemon   | none; the sender has _exit()ed (STYLE rule 5)     |
|   |              | PID 1         |          |                                                   |
| - | EOF on go    | daemon (gone  | PID 1    | PID 1 exits without building anything             |
|   |              | or aborted)   |          |                                                   |

Before Go the daemon does host-side setup (user namespace maps, veth). EOF on the sync pipe
after Go means PID 1's execve succeeded: the close-on-exec write end closed with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

GO = b"G"


class ProtocolError(Exception):
    """A message other than the one the protocol expects at this step."""

    def __init__(self, expected: str, received: str) -> None:
        self.expected, self.received = expected, received
        super().__init__(f"launch protocol: expected {expected}, received {received}")


@dataclass(frozen=True)
class PidReport:
    """The host PID of the sandbox's PID 1, from the launcher that forked it."""

    pid: int


@dataclass(frozen=True)
class ChildError:
    """A failure between fork and exec: where, the errno (0 if none) and what happened."""

    stage: str
    errno: int
    message: str


Message = PidReport | ChildError
_KINDS: dict[str, type[PidReport] | type[ChildError]] = {
    "pid": PidReport,
    "error": ChildError,
}
_NAMES = {cls: name for name, cls in _KINDS.items()}


def encode(msg: Message) -> bytes:
    return json.dumps({"kind": _NAMES[type(msg)], **asdict(msg)}).encode() + b"\n"


def decode(line: bytes) -> Message:
    try:
        data = json.loads(line)
        cls = _KINDS[data.pop("kind")]
        return cls(**data)
    except (ValueError, KeyError, TypeError):
        raise ProtocolError("a PidReport or ChildError", repr(line[:200])) from None


def describe(msg: Message | None) -> str:
    return "EOF" if msg is None else type(msg).__name__


class Reader:
    """Reads messages off the daemon's end of the sync pipe (blocking; the fd is the caller's)."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read  # os.read on the pipe, or a fake in tests
        self._buf = b""

    def next(self) -> Message | None:
        """The next message, or None at EOF."""
        while b"\n" not in self._buf:
            chunk = self._read(4096)
            if not chunk:
                if self._buf:
                    raise ProtocolError("a complete message", repr(self._buf[:200]))
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return decode(line)


class StageFailure(Exception):
    """Raised inside the children; the stage loop turns it into a ChildError on the pipe."""

    def __init__(self, stage: str, errno: int, message: str) -> None:
        self.stage, self.errno, self.message = stage, errno, message
        super().__init__(f"{stage}: {message}")

    @classmethod
    def from_oserror(cls, stage: str, what: str, err: OSError) -> StageFailure:
        code = err.errno or 0
        reason = err.strerror or str(err)
        return cls(stage, code, f"{what}: {reason}")

    def to_message(self) -> ChildError:
        return ChildError(self.stage, self.errno, self.message)
