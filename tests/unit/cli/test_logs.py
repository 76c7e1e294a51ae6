"""`sandboxctl logs`: --json lines, and reading the files directly when the daemon is unreachable
(the same output as through the daemon, -n and -f included)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import sandboxctl

from supervisor.api.testing import FakeController, ServerThread
from supervisor.cli.commands.logs import JsonLines
from supervisor.errors import EXIT_FAILURE, EXIT_NO_SUCH_UNIT, EXIT_OK
from tests.support.requires import requires_root
from tests.support.waiting import wait_for

NOTE = "reading the log files in"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A daemon config naming a units_dir without units."""
    (tmp_path / "units").mkdir()
    path = tmp_path / "sandboxd.toml"
    path.write_text(f'units_dir = "{tmp_path / "units"}"\n')
    return path


@pytest.fixture
def no_daemon(config: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No daemon at $SANDBOXD_SOCKET; returns the config."""
    monkeypatch.setenv("SANDBOXD_SOCKET", str(config.parent / "no-daemon.sock"))
    return config


def _history(log_dir: Path) -> None:
    """web.log with two rotated files and a last line without its newline."""
    (log_dir / "web.log.2").write_text("one\ntwo\n")
    (log_dir / "web.log.1").write_text("three\n")
    (log_dir / "web.log").write_text("four\nfive")


@pytest.mark.parametrize(
    "argv",
    [(), ("-n", "0"), ("-n", "2"), ("-n", "4"), ("-n", "100"), ("--json",), ("--json", "-n", "3")],
)
def test_without_the_daemon_the_output_is_the_daemons(
    argv: tuple[str, ...],
    daemon: ServerThread,
    controller: FakeController,
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _history(controller.log_dir)
    through = sandboxctl("logs", "web", *argv)
    assert (through.code, through.err) == (EXIT_OK, "")
    monkeypatch.setenv("SANDBOXD_SOCKET", str(config.parent / "no-daemon.sock"))
    direct = sandboxctl("logs", "web", *argv, "--log-dir", str(controller.log_dir),
                        "--config", str(config))  # fmt: skip
    assert (direct.code, direct.out) == (EXIT_OK, through.out)
    [note] = direct.err.splitlines()
    assert note.startswith("sandboxctl: cannot reach sandboxd at ")
    assert note.endswith(f"; {NOTE} {controller.log_dir} directly")


def test_json_lines(daemon: ServerThread, controller: FakeController) -> None:
    _history(controller.log_dir)
    result = sandboxctl("logs", "web", "--json")
    objects = [json.loads(line) for line in result.out.splitlines()]
    assert objects == [{"unit": "web", "text": t} for t in ("one", "two", "three", "four", "five")]


def test_json_lines_split_across_chunks_and_not_utf8() -> None:
    class Out:
        data = b""

        def write(self, b: bytes) -> None:
            self.data += b

    out = Out()
    lines = JsonLines("web", out)  # type: ignore[arg-type]
    for chunk in (b"al", b"pha\nbe", b"ta\n\xff\x1b[31m\n", b"\nend"):
        lines.write(chunk)
    assert out.data.count(b"\n") == 4  # "end" waits: the followed line may go on
    lines.close()
    texts = [json.loads(line)["text"] for line in out.data.splitlines()]
    assert texts == ["alpha", "beta", "\\xff\x1b[31m", "", "end"]


def test_the_log_dir_comes_from_the_config(tmp_path: Path, no_daemon: Path) -> None:
    logs = tmp_path / "moved"
    logs.mkdir()
    _history(logs)
    no_daemon.write_text(no_daemon.read_text() + f'log_dir = "{logs}"\n')
    result = sandboxctl("logs", "web", "-n", "1", "--config", str(no_daemon))
    assert (result.code, result.out) == (EXIT_OK, "five")
    assert f"{NOTE} {logs} directly" in result.err


def test_unknown_units_without_the_daemon(tmp_path: Path, no_daemon: Path) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    base = ("--config", str(no_daemon), "--log-dir", str(logs))
    result = sandboxctl("logs", "ghost", *base)
    assert result.code == EXIT_NO_SUCH_UNIT
    assert result.err.splitlines()[-1] == (
        f"sandboxctl: no such unit: ghost (no ghost.log in {logs} and no ghost.toml in "
        f"{tmp_path / 'units'})"
    )
    assert sandboxctl("logs", "../log/x", *base).code == EXIT_NO_SUCH_UNIT  # not a unit name
    # A unit that has a file but has not written anything yet: nothing to print, no error.
    (tmp_path / "units" / "quiet.toml").write_text('[service]\nexec = ["/bin/true"]\n')
    quiet = sandboxctl("logs", "quiet", *base)
    assert (quiet.code, quiet.out) == (EXIT_OK, "")
    missing = sandboxctl("logs", "quiet", "--config", str(no_daemon), "--log-dir",
                         str(tmp_path / "never-made"))  # fmt: skip
    assert (missing.code, missing.out) == (EXIT_OK, "")


def test_links_are_not_followed_without_the_daemon(tmp_path: Path, no_daemon: Path) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("not a log\n")
    (logs / "web.log").symlink_to(secret)
    result = sandboxctl("logs", "web", "--config", str(no_daemon), "--log-dir", str(logs))
    assert (result.code, result.out) == (EXIT_OK, "")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory outside pytest's 0700 tmp_path, so another user can reach into it."""
    path = Path(tempfile.mkdtemp(prefix="sbx-cli-logs-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "SANDBOXD_SOCKET": "/nonexistent/control.sock",
           "PYTHONPATH": str(Path(__file__).resolve().parents[3])}  # fmt: skip
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "supervisor.cli.main", *argv],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@requires_root
def test_a_permission_error_is_one_line(shared_dir: Path) -> None:
    logs = shared_dir / "log"
    logs.mkdir(mode=0o750)  # as the daemon makes it: root and its group
    _history(logs)
    config = shared_dir / "sandboxd.toml"
    config.write_text(f'log_dir = "{logs}"\nunits_dir = "{shared_dir}"\n')
    config.chmod(0o644)
    result = _as_nobody("logs", "web", "--config", str(config))
    assert (result.returncode, result.stdout) == (EXIT_FAILURE, ""), result
    note, problem = result.stderr.splitlines()
    assert NOTE in note
    assert problem == (
        f"sandboxctl: cannot read the logs in {logs}: permission denied (root or a member of "
        "the daemon's group may read them)"
    )
    # A member of the group reads the root-owned files, as through the daemon.
    logs.chmod(0o755)
    for f in logs.iterdir():
        f.chmod(0o644)
    result = _as_nobody("logs", "web", "-n", "2", "--config", str(config))
    assert (result.returncode, result.stdout) == (EXIT_OK, "four\nfive"), result


def test_follow_without_the_daemon(tmp_path: Path, no_daemon: Path) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    log = logs / "web.log"
    log.write_text("first run\n")
    out = tmp_path / "out"
    env = {**os.environ, "SANDBOXD_SOCKET": str(tmp_path / "no-daemon.sock")}
    with open(out, "wb") as sink:
        follower = subprocess.Popen(
            [sys.executable, "-m", "supervisor.cli.main", "logs", "web", "-f",
             "--config", str(no_daemon), "--log-dir", str(logs)],
            env=env, stdout=sink, stderr=subprocess.PIPE,
        )  # fmt: skip
    try:
        wait_for(lambda: out.read_bytes() == b"first run\n", 60, lambda: repr(out.read_bytes()))
        with open(log, "a") as f:
            f.write("more\n")
        wait_for(lambda: out.read_bytes().endswith(b"more\n"), 60, lambda: repr(out.read_bytes()))
        log.rename(logs / "web.log.1")  # rotated, as the daemon does, then a new file
        log.write_text("second run\n")
        want = b"first run\nmore\nsecond run\n"
        wait_for(lambda: out.read_bytes() == want, 60, lambda: repr(out.read_bytes()))
    finally:
        follower.send_signal(signal.SIGINT)  # how a user ends -f
        _, err = follower.communicate(timeout=60)
    assert follower.returncode == EXIT_OK, err
    assert err.decode().count("\n") == 1 and NOTE.encode() in err
