"""`sandboxctl run` against a real daemon: transient units (no unit file).

`--wait` prints the service's output and exits with its status, and forwards SIGINT to its
PID 1; `--rm` removes the unit once its run is over; a transient unit is re-adopted by a daemon
started after `kill -9`, and kept by `reload`; a bad `-p` key is an error naming the key.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon_kit import Daemon, pid_alive, wait_for
from tests.support.requires import requires_root

pytestmark = [pytest.mark.root, requires_root]


def _env(d: Daemon) -> dict[str, str]:
    env = {**os.environ, "SANDBOXD_SOCKET": str(d.socket)}
    env.pop("TERM", None)
    return env


def sandboxctl(d: Daemon, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli.main", *argv],
        env=_env(d), capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _transient(d: Daemon) -> set[str]:
    directory = d.state / "transient"
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


@pytest.fixture
def running(daemon: Daemon) -> Daemon:
    daemon.start()
    return daemon


def test_wait_prints_the_output_and_exits_with_its_status(running: Daemon) -> None:
    script = "echo out; echo err >&2; head -c 300000 /dev/zero | tr '\\0' x; echo; exit 7"
    out = sandboxctl(running, "run", "--wait", "--name", "job", "--", "sh", "-c", script)
    assert out.returncode == 7, out.stderr
    assert out.stdout.startswith("out\nerr\n") and out.stdout.count("x") == 300000, out.stderr
    # Without --rm the unit stays, exited, with its log.
    assert running.unit("job")["state"] == "exited"
    assert running.unit("job")["last_exit"] == "exit-code:7"
    ok = sandboxctl(running, "run", "--wait", "--rm", "true")
    assert ok.returncode == 0 and ok.stdout == "", ok.stderr
    # A short run that is removed at once still has all of its output printed.
    for _ in range(3):
        hello = sandboxctl(running, "run", "--wait", "--rm", "echo", "hello")
        assert hello.returncode == 0 and hello.stdout == "hello\n", hello.stderr
    oom = sandboxctl(running, "run", "--wait", "--rm", "-p", "resources.memory_max=32M",
                     "-p", "resources.swap_max=0", "--",
                     "python3", "-c", "b = b'x' * (200 << 20)")  # fmt: skip
    assert oom.returncode == 137, oom.stderr


def test_rm_removes_the_unit_once_its_run_is_over(running: Daemon) -> None:
    out = sandboxctl(running, "run", "--rm", "--name", "once", "sh", "-c", "exit 3")
    assert out.returncode == 0 and out.stdout == "once\n", out.stderr
    wait_for(lambda: "once" not in running.status(), 60)
    assert _transient(running) == set()
    removed = [e for e in running.events("unit.removed") if e["unit"] == "once"]
    assert removed


def test_wait_forwards_sigint_to_pid1(running: Daemon) -> None:
    script = 'trap "echo got INT; exit 5" INT; echo ready; while :; do sleep 0.05; done'
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli.main", "run", "--wait", "--rm", "--",
         "sh", "-c", script],
        env=_env(running), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 5
        assert proc.stdout.read() == "got INT\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_bad_property_is_an_error_naming_the_key(running: Daemon) -> None:
    out = sandboxctl(running, "run", "-p", "resources.memry_max=64M", "true")
    assert out.returncode == 2
    assert "resources.memry_max: unknown key" in out.stderr, out.stderr
    assert 'did you mean "memory_max"' in out.stderr, out.stderr
    out = sandboxctl(running, "run", "-p", "memory_max=64M", "true")
    assert out.returncode == 2 and "-p memory_max: a key is SECTION.KEY" in out.stderr
    out = sandboxctl(running, "run", "no-such-command-here")
    assert out.returncode == 2 and "no-such-command-here: not found" in out.stderr
    assert running.status() == {} and _transient(running) == set()


def test_transient_unit_is_readopted_after_kill_9_and_kept_by_reload(
    daemon: Daemon, tmp_path: Path
) -> None:
    daemon.write_unit("web", '[service]\nexec = ["/bin/sleep", "1000"]\n')
    daemon.start()
    taken = sandboxctl(daemon, "run", "--name", "web", "sleep", "1000")
    assert taken.returncode == 1 and "a unit named web exists already" in taken.stderr
    out = sandboxctl(daemon, "run", "--name", "keep", "-p", "service.stop_timeout=1s",
                     "sleep", "1000")  # fmt: skip
    assert out.returncode == 0 and out.stdout == "keep\n", out.stderr
    pid = daemon.wait_unit("keep", lambda u: u["state"] == "running")["pid"]
    code, result = daemon.request("POST", "/v1/reload")
    assert code == 200 and "keep" in result["unchanged"], result
    daemon.wait_recorded()
    daemon.kill9()
    assert pid_alive(pid)
    daemon.start()
    unit = daemon.wait_unit("keep", lambda u: u["state"] == "running")
    assert unit["pid"] == pid
    assert [e for e in daemon.events("unit.adopted", run=2) if e["unit"] == "keep"]
    # DELETE stops and removes it; a unit with a file is refused.
    code, body = daemon.request("DELETE", "/v1/units/web")
    assert code == 409 and "not a transient unit" in body["error"], body
    code, body = daemon.request("DELETE", "/v1/units/keep")
    assert code == 200 and body == {"removed": "keep"}, body
    assert "keep" not in daemon.status() and not pid_alive(pid)
    assert _transient(daemon) == set()
