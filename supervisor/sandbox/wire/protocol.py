"""The launch protocol between the daemon, the launcher child and the sandbox's PID 1.

Two pipes, both close-on-exec:
  sync pipe  launcher/PID 1 -> daemon   newline-terminated JSON messages (each < PIPE_BUF, so
                                          a write is atomic); EOF once every writer is gone
  go pipe    daemon -> PID 1             one byte

| # | message      | sender        | receiver | expected reply / what follows                     |
|---|--------------|---------------|----------|---------------------------------------------------|
| 1 | PidReport    | launcher      | daemon   | none; the launcher exits, the daemon reaps it     |
| 2 | Go (b"G")    | daemon        | PID 1    | ChildError, or EOF on the sync pipe (= exec done) |
|   |              |               |          | (PID 1 builds ahead and waits for Go before exec; |
|   |              |               |          | in a user namespace before building anything)     |
| - | ChildError   | launcher or   | daemon   | none; the sender has _exit()ed (never silently)  |
|   |              | PID 1         |          |                                                   |
| - | EOF on go    | daemon (gone  | PID 1    | PID 1 exits without exec                          |
|   |              | or aborted)   |          |                                                   |
| - | Trace        | launcher (before PidReport), PID 1 (before execve) | daemon | none; only   |
|   |              | when the plan asks for a trace (`ChildPlan.trace`, the bench's `--trace`) |  |

Before Go the daemon does host-side setup (user namespace maps, veth). EOF on the sync pipe
after Go means PID 1's execve succeeded: the close-on-exec write end closed with it. PID 1
writes nothing before Go (a failure while building ahead is reported after Go), so before Go
the daemon reads the launcher's messages only.

With a fork server (host/forkserver.py) the daemon does not fork the launcher itself: it hands
the launch to a spare launcher the server forked ahead, over Unix stream socketpairs, and
everything above stays as it is (the launcher and
PID 1 still talk to the daemon directly through the pipes, which travel with the request).
Frames: a 4-byte big-endian header length, a 4-byte body length, the header (one JSON
message below), the body; fds ride on the frame's first byte (SCM_RIGHTS).

| # | message      | sender  | receiver | fds (SCM_RIGHTS)              | expected reply          |
|---|--------------|---------|----------|-------------------------------|-------------------------|
| 0 | Hello        | server  | daemon   | the spare's channel and a     | none; the server is up  |
|   |              |         |          | pidfd of it (none: no spare)  |                         |
| 1 | plan         | daemon  | spare    | sync_w, go_r, stdout, stderr, | none; then message 1    |
|   |              |         |          | then the plan's keep_fds      | above on the sync pipe  |
|   | (on the spare's own channel; header empty, body: the ChildPlan, plancodec.py)        |
| 2 | Used         | daemon  | server   | -                             | none; then a Spare      |
|   | (body: the same plan; `offers`: its blobs for the server to keep; `parts`: its         |
|   | root_ops, for the server to keep decoded)                                             |
| - | Spare        | server  | daemon   | the new spare's channel and a | none (read before the   |
|   |              |         |          | pidfd of it (none: pid 0)     | next launch or reply)   |
| 3 | ForkRequest  | daemon  | server   | as message 1                  | Forked or ServerError   |
|   | (only when the daemon holds no spare: its fork failed, or it died idle; body, offers |
|   | and parts as for Used)                                                                |
| 4 | Forked       | server  | daemon   | a pidfd of the launcher       | none; then message 1    |
|   |              |         |          | (none if it is already gone)  | above on the sync pipe  |
| - | ServerError  | server  | daemon   | -                             | none; nothing was forked|
| 5 | EnterRequest | daemon  | server   | report_w, output_w, a pidfd   | Forked (the command) or |
|   |              |         |          | of the sandbox's PID 1        | ServerError             |
|   | (body: the default seccomp BPF, loaded if PID 1 runs under a filter)                  |
| - | EOF          | daemon  | server   | -                             | the server exits        |

The daemon sends a launch straight to the spare launcher the server forked ahead (one wake-up
on the launch's path, not two: the server is not woken to pass it on), then tells the server
with Used, which keeps what the plan offered and forks the next spare while the first one
works. The server never holds an idle spare's channel itself: only the daemon can give a spare
its launch. A Used the server cannot keep is fatal to it (the daemon then starts a new one,
which holds nothing, so the daemon's record of what is held never goes wrong).

An EnterRequest (an exec health probe, server/probe_run.py) is served by the server itself: it
forks the command into the sandbox and answers Forked with the command's PID and pidfd (or a
ServerError if the sandbox could not be entered). On the report pipe (newline-terminated JSON,
like the sync pipe): PidReport(the command's host PID), then Exited once the server has reaped
it (killed at `timeout`), then EOF.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

GO = b"G"
# Fds a launch may keep for PID 1 (LaunchRequest.keep_fds); bounds a request's SCM_RIGHTS.
MAX_KEEP_FDS = 16


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


@dataclass(frozen=True)
class Exited:
    """An entered command ended: its wait status, and whether it was killed for its timeout."""

    status: int
    timed_out: bool


@dataclass(frozen=True)
class Trace:
    """CLOCK_MONOTONIC timestamps a child took at the end of each of its stages, in order: the
    stages' names and their times in ns (time.monotonic_ns(), one clock for every process).
    Sent only for a plan with `trace` set, so an untraced launch pays nothing."""

    stages: list[str]
    ns: list[int]


Message = PidReport | ChildError | Exited | Trace
_KINDS: dict[str, type[Message]] = {
    "pid": PidReport,
    "error": ChildError,
    "exited": Exited,
    "trace": Trace,
}
_NAMES = {cls: name for name, cls in _KINDS.items()}


@dataclass(frozen=True)
class Hello:
    """The fork server is ready (sent once, after its own setup)."""

    pid: int
    spare: int  # its spare launcher (0: none); the daemon reaps it if the server dies


@dataclass(frozen=True)
class ForkRequest:
    """Fork a launcher for the plan in the frame's body, with `fds` passed alongside."""

    fds: int  # how many: sync_w, go_r, stdout, stderr, then one per keep_fds, in that order
    # Blobs of the plan for the server to keep, (SHA-256 hex, offset, length) in the body's
    # blobs; later plans name them by digest only (plancodec.py).
    offers: list[tuple[str, int, int]] = field(default_factory=list)
    # The plan's root_ops, offered inline for the server to keep decoded: (token, how many
    # ops); later plans name them by token only (plancodec.py).
    parts: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Used:
    """The daemon handed the plan in the frame's body straight to the spare launcher whose
    channel the last Hello or Spare carried: keep the plan's offers and parts as for a
    ForkRequest, then fork the next spare. No answer but that spare's Spare notice."""

    offers: list[tuple[str, int, int]] = field(default_factory=list)
    parts: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class EnterRequest:
    """Run `argv` inside the running sandbox whose PID 1 is `pid` (an exec health probe).

    Everything else (namespaces, root, uid, capabilities, environment) is read from PID 1 by
    the runner, as `sandboxctl exec` does; the command joins `cgroup_dirs` instead of PID 1's
    cgroups and is SIGKILLed after `timeout` seconds."""

    pid: int
    argv: list[str]
    cgroup_dirs: list[str]
    timeout: float


@dataclass(frozen=True)
class Forked:
    """The launcher is forked; its own messages follow on the sync pipe."""

    pid: int


@dataclass(frozen=True)
class Spare:
    """The server forked its next spare launcher (sent after a Forked or a Used, unasked);
    pid 0: it could not, and the next launch goes through a ForkRequest."""

    pid: int


@dataclass(frozen=True)
class ServerError:
    """The fork server could not fork this request (bad request, fork failed)."""

    errno: int
    message: str


ServerMessage = Hello | ForkRequest | Used | EnterRequest | Forked | Spare | ServerError
_SERVER_KINDS: dict[str, type[ServerMessage]] = {
    "hello": Hello,
    "fork": ForkRequest,
    "used": Used,
    "enter": EnterRequest,
    "forked": Forked,
    "spare": Spare,
    "server-error": ServerError,
}
_SERVER_NAMES = {cls: name for name, cls in _SERVER_KINDS.items()}


def _fields(msg: Message | ServerMessage) -> dict[str, object]:
    """A message's fields by name. Every message is flat (numbers, strings, lists and tuples of
    them), so its own __dict__ says what dataclasses.asdict would, without asdict's recursion
    and deep copy of each value: Python a launcher runs (and takes copy-on-write faults for)
    on every launch, to send one PID."""
    return vars(msg)


def encode_server(msg: ServerMessage) -> bytes:
    if type(msg) is Spare:
        # The server sends one per launch, just after the fork that write-protected all its
        # pages: json's Python here was ~25 copy-on-write faults of the server's ~210 a launch.
        # The bytes json.dumps writes, as encode's PidReport.
        return b'{"kind": "spare", "pid": %d}' % msg.pid
    return json.dumps({"kind": _SERVER_NAMES[type(msg)], **_fields(msg)}).encode()


M = TypeVar("M", bound=ServerMessage)


def decode_server(data: bytes, expected: tuple[type[M], ...]) -> M:
    """One fork-server message of one of the `expected` types, else ProtocolError naming both."""
    names = " or ".join(cls.__name__ for cls in expected)
    try:
        fields = json.loads(data)
        msg = _SERVER_KINDS[fields.pop("kind")](**fields)
    except (ValueError, KeyError, TypeError):
        raise ProtocolError(names, repr(data[:200])) from None
    if not isinstance(msg, expected):
        raise ProtocolError(names, type(msg).__name__)
    return msg


def encode(msg: Message) -> bytes:
    if type(msg) is PidReport:
        # Every launcher sends one: formatted here, byte for byte what json.dumps writes,
        # without json's Python (dumps, the encoder's encode and iterencode) run in the
        # launcher on pages it has not written yet, each a copy-on-write fault.
        return b'{"kind": "pid", "pid": %d}\n' % msg.pid
    return json.dumps({"kind": _NAMES[type(msg)], **_fields(msg)}).encode() + b"\n"


def decode(line: bytes) -> Message:
    try:
        data = json.loads(line)
        cls = _KINDS[data.pop("kind")]
        return cls(**data)
    except (ValueError, KeyError, TypeError):
        raise ProtocolError("a PidReport, ChildError, Exited or Trace", repr(line[:200])) from None


def describe(msg: Message | None) -> str:
    return "EOF" if msg is None else type(msg).__name__


class Reader:
    """Reads messages off the daemon's end of the sync pipe (blocking; the fd is the caller's)."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read  # os.read on the pipe, or a fake in tests
        self._buf = b""

    def buffered(self) -> bool:
        """A whole message was read already: next() returns it without reading."""
        return b"\n" in self._buf

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
