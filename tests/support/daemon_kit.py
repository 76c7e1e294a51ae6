"""Real daemons for tests: `sandboxd` subprocesses on their own temporary paths.

Imported by name (`from daemon_kit import Daemon`), not through conftest: with several
conftest.py files in one run, `import conftest` gets whichever pytest loaded last.

Each daemon gets its own units/state/log/data dirs and control socket under /tmp (Unix sockets
cannot live on the VM's 9p share) and its own cgroup parent `sandboxd-test-<pid>-<n>`, so
several run side by side. Teardown stops the daemon (SIGTERM; SIGKILL only if it hangs, by its
PID), then asserts that nothing is left in its cgroup parent and removes that parent.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

from supervisor.linux import helduserns
from tests.support.requires import CGROUP_ROOT, cgroup_version
from tests.support.waiting import wait_for

_serial = count()
START_TIMEOUT = 90.0  # TCG-emulated VM (cgroup v2 runs) is ~5x slower


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Daemon:
    def __init__(self, base: Path, cgroup_parent: str) -> None:
        self.base, self.cgroup_parent = base, cgroup_parent
        self.units, self.state, self.logs = base / "units", base / "state", base / "log"
        self.data, self.socket = base / "data", base / "control.sock"
        self.config = base / "sandboxd.toml"
        self.units.mkdir(parents=True)
        self.config.write_text("")
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    # -- files -------------------------------------------------------------------------

    def write_unit(self, name: str, text: str) -> None:
        tmp = self.units / f".{name}.tmp"
        tmp.write_text(text)
        os.rename(tmp, self.units / f"{name}.toml")

    def remove_unit(self, name: str) -> None:
        (self.units / f"{name}.toml").unlink()

    def stderr_path(self, run: int | None = None) -> Path:
        return self.base / f"daemon-{self.runs if run is None else run}.log"

    def events(self, name: str | None = None, run: int | None = None) -> list[dict[str, Any]]:
        """The daemon's structlog events (JSON lines on stderr), optionally one event name."""
        found = []
        for line in self.stderr_path(run).read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if name is None or event.get("event") == name:
                found.append(event)
        return found

    # -- process -----------------------------------------------------------------------

    def start(
        self,
        wait_ready: bool = True,
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
    ) -> None:
        """`wrapper`: a command the daemon runs under (`["prlimit", "--nofile=64:64", "--"]`),
        which must exec it: `proc.pid` is the daemon's pid."""
        assert self.proc is None or self.proc.poll() is not None
        self.runs += 1
        argv = [
            *(wrapper or []),
            sys.executable, "-m", "supervisor", "--config", str(self.config),
            "--units-dir", str(self.units), "--state-dir", str(self.state),
            "--log-dir", str(self.logs), "--data-dir", str(self.data),
            "--socket", str(self.socket), "--cgroup-parent", self.cgroup_parent,
            "--log-format", "json",
        ]  # fmt: skip
        with open(self.stderr_path(), "wb") as err:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                env={**os.environ, **(env or {})},
            )  # fmt: skip
        if wait_ready:
            wait_for(
                lambda: bool(self.events("daemon.ready")) or self._died(),
                START_TIMEOUT,
                lambda: "daemon not ready; stderr tail:\n" + self.stderr_path().read_text()[-3000:],
            )
            assert self.proc.poll() is None, self.stderr_path().read_text()[-3000:]
            wait_for(self.socket.exists, START_TIMEOUT)

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def records(self) -> dict[str, dict[str, Any]]:
        """The unit state records on disk, by unit (a file caught mid-rename is left out)."""
        found = {}
        for path in (self.state / "units").glob("*.json"):
            with contextlib.suppress(FileNotFoundError, ValueError):
                found[path.stem] = json.loads(path.read_bytes())
        return found

    def wait_recorded(self, timeout: float = 60.0) -> None:
        """Wait until every unit's record on disk says the state and PID `status` shows. The
        daemon writes records on its state writer thread, a moment after the change (issue 29):
        a test that SIGKILLs it to see runs re-adopted waits for this first, or it tests the
        crash before the record landed (tests/reliability/test_state_disk_stall.py does)."""

        def recorded() -> bool:
            records = self.records()
            for name, unit in self.status().items():
                record = records.get(name, {})
                # Also a unit still waiting for READY=1: saved on entering `starting` with no
                # PID, then again with its run's PID once launched (unit_runner.py), which is
                # the record a re-adoption needs.
                if record.get("pid") != unit.get("pid"):
                    return False
                if record and record.get("state") != unit["state"]:
                    return False
            return True

        wait_for(recorded, timeout, lambda: f"records {self.records()} status {self.status()}")

    # -- API ---------------------------------------------------------------------------

    def request(self, method: str, path: str) -> tuple[int, Any]:
        conn = UnixHTTPConnection(self.socket)
        try:
            conn.request(method, path, body=b"{}" if method == "POST" else None,
                         headers={"Content-Type": "application/json"})  # fmt: skip
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    def status(self) -> dict[str, dict[str, Any]]:
        code, body = self.request("GET", "/v1/units")
        assert code == 200, body
        return {u["name"]: u for u in body["units"]}

    def unit(self, name: str) -> dict[str, Any]:
        code, body = self.request("GET", f"/v1/units/{name}")
        assert code == 200, body
        return dict(body)

    def wait_unit(
        self, name: str, done: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def check() -> bool:
            nonlocal seen
            seen = self.status().get(name, {})
            return bool(seen) and done(seen)

        wait_for(check, timeout, lambda: f"{name}: {seen}")
        return seen

    # -- kernel views ------------------------------------------------------------------

    def cgroup_dirs(self) -> list[Path]:
        if cgroup_version() == 2:  # absent if the daemon never got as far as making it
            return [p for p in [Path(CGROUP_ROOT) / self.cgroup_parent] if p.is_dir()]
        return [p for p in Path(CGROUP_ROOT).glob(f"*/{self.cgroup_parent}") if p.is_dir()]

    def cgroup_file(self, unit: str, name: str) -> Path:
        if cgroup_version() == 2:
            return Path(CGROUP_ROOT) / self.cgroup_parent / unit / name
        return Path(CGROUP_ROOT) / name.split(".", 1)[0] / self.cgroup_parent / unit / name

    def leftover_pids(self) -> list[int]:
        pids: set[int] = set()
        for d in self.cgroup_dirs():
            for procs in d.rglob("cgroup.procs"):
                pids.update(int(p) for p in procs.read_text().split())
        return sorted(pids)

    def output(self, unit: str) -> str:
        """What the unit's service has written so far ("" before its first output: the daemon
        creates the log file when output first arrives)."""
        try:
            return (self.logs / f"{unit}.log").read_text()
        except FileNotFoundError:
            return ""

    def leftover_cgroups(self) -> list[str]:
        return sorted(str(p) for d in self.cgroup_dirs() for p in d.iterdir() if p.is_dir())


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # the read races with the reaping: ESRCH
        return False


def teardown(d: Daemon) -> list[str]:
    problems = []
    if d.proc is not None and d.proc.poll() is None:
        try:
            d.stop(timeout=60)
        except subprocess.TimeoutExpired:
            problems.append("daemon did not stop on SIGTERM within 60s")
            d.kill9()
    left = d.leftover_pids()
    if left:
        problems.append(f"processes left in {d.cgroup_parent}: {left}")
        # Everything below this test's unique cgroup parent was started by this test.
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not d.leftover_pids(), 60)
    # Held user namespaces (linux/helduserns.py) outlive a daemon killed with -9, by design.
    helduserns.drop_all(str(d.state / "userns"))
    cgroups = d.leftover_cgroups()
    if cgroups:
        problems.append(f"cgroups left: {cgroups}")
    for directory in d.cgroup_dirs():
        for sub in sorted(directory.rglob("*"), key=lambda p: -len(p.parts)):
            if sub.is_dir():
                sub.rmdir()
        directory.rmdir()
    return problems


def new_daemon() -> Daemon:
    """A new isolated (not yet started) daemon; `teardown` it when done."""
    n = next(_serial)
    base = Path(tempfile.mkdtemp(prefix=f"sbxd-{os.getpid()}-{n}-", dir="/tmp"))
    # A default unit runs as its own unprivileged host ids (a user namespace each), which must
    # pass through this directory to reach the bind sources tests put in it, as an operator's
    # sources must be reachable (README, User namespaces). 0711: entered, never listed.
    base.chmod(0o711)
    return Daemon(base, f"sandboxd-test-{os.getpid()}-{n}")
