"""`sandboxctl run --wait`: the service's output as it comes, SIGINT and SIGTERM forwarded to
its PID 1, and the exit status once its run is over and its output all printed. Imported only
for --wait (threading is no part of a plain `run`)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator

from supervisor.cli.client import ApiError, Client, Unreachable, error
from supervisor.cli.commands.run import LAUNCH_FAILED, status_of
from supervisor.errors import EXIT_FAILURE

SETTLED = ("exited", "failed", "stopped")
OUTPUT_GRACE = 10.0  # after the end, how long the rest of the output may take to arrive


class Waiter:
    """`--wait`: the output on one thread, the events (the end, output_closed) on this one."""

    def __init__(self, client: Client, name: str) -> None:
        self.client, self.name = client, name
        self.printed = 0
        self.progress = threading.Condition()
        self.interrupts = 0

    def wait(self, seq: int) -> int:
        output = self.client.follow_logs(self.name)
        threading.Thread(target=self._print_output, args=(output,), daemon=True).start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._forward)
        started = self.client.action(self.name, "start")
        if started["state"] == "stopped":  # autostart = false does not hold back `start`
            return EXIT_FAILURE
        status, written = self._until_over(seq)
        if written is not None:
            with self.progress:
                self.progress.wait_for(lambda: self.printed >= written, OUTPUT_GRACE)
        sys.stdout.flush()
        return status

    def _print_output(self, output: Iterator[bytes]) -> None:
        out = sys.stdout.buffer
        try:
            for chunk in output:
                out.write(chunk)
                out.flush()
                with self.progress:
                    self.printed += len(chunk)
                    self.progress.notify_all()
        except (OSError, ApiError, Unreachable):  # the unit went (--rm): its output ended
            return

    def _until_over(self, seq: int) -> tuple[int, int | None]:
        """(exit status, bytes of output) once the unit's run is over; the byte count is None
        when the daemon did not say it within OUTPUT_GRACE."""
        status: int | None = None
        written: int | None = None
        for event in self.client.events(since=seq, follow=True):
            seq = max(seq, int(event.get("seq") or 0))
            if event.get("unit") != self.name:
                continue
            kind, detail = event.get("event"), event.get("detail") or {}
            if kind == "started":
                written = None  # a restart: wait for this run's output
            elif kind == "output_closed":
                written = int(detail.get("written", 0))
            elif kind == "exited" and event.get("state") in SETTLED:
                status = status_of(detail.get("reason"))
            elif kind == "failed" and status is None:  # could not launch: no run, no output
                error(f"{self.name}: {detail.get('reason')}")
                return LAUNCH_FAILED, 0
            if status is not None:
                break
        if status is None:  # the stream ended: the daemon went away
            return EXIT_FAILURE, None
        if written is None:  # the output's end may come after the exit: wait for it, bounded
            deadline = time.monotonic() + OUTPUT_GRACE
            for event in self.client.events(since=seq, follow=True, deadline=deadline):
                if event.get("unit") == self.name and event.get("event") == "output_closed":
                    written = int((event.get("detail") or {}).get("written", 0))
                    break
        return status, written

    def _forward(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        self.interrupts += signum == signal.SIGINT
        try:
            if self.interrupts >= 2:
                error(f"{self.name}: stopping (a second interrupt)")
                threading.Thread(target=self.client.action, args=(self.name, "stop"),
                                 daemon=True).start()  # fmt: skip
            else:
                self.client.kill(self.name, name)
        except ApiError as exc:
            error(f"{self.name}: {exc.message}")
