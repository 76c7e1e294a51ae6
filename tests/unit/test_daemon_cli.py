"""`sandboxd`'s command line and its exit: flags documented, --version, one list of log formats,
and an exit that does not tear the interpreter down after the daemon has stopped."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

import pytest

from supervisor import __version__
from supervisor.config import DaemonConfig
from supervisor.daemon import build_parser, parse_args
from supervisor.log import LOG_FORMATS


def test_every_option_says_what_it_does() -> None:
    for action in build_parser()._actions:
        assert action.help and len(action.help) > 10, action.option_strings


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"sandboxd {__version__}"


@pytest.mark.parametrize("fmt", ["auto", "json", "console"])
def test_log_format_takes_what_the_config_file_takes(fmt: str) -> None:
    assert parse_args(["--log-format", fmt]).log_format == fmt
    assert DaemonConfig(log_format=fmt).log_format == fmt  # type: ignore[arg-type]


def test_log_formats_are_declared_once() -> None:
    annotation = DaemonConfig.model_fields["log_format"].annotation
    assert get_args(annotation) == LOG_FORMATS == ("auto", "json", "console")


def test_an_unknown_log_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--log-format", "xml"])
    assert exc.value.code == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err


def test_a_stopped_daemon_exits_without_interpreter_teardown() -> None:
    # The cause of the linger after daemon.stopped was interpreter teardown (freeing every
    # module's objects); with it skipped, an atexit handler never runs. What was logged before
    # must still arrive (flushed), and the status is 0.
    code = (
        "import atexit, sys\n"
        "from supervisor import daemon\n"
        "async def serve(config):\n"
        "    sys.stderr.write('served')\n"  # no newline, no flush: exit_now flushes
        "daemon.serve = serve\n"
        "atexit.register(lambda: print('torn down', file=sys.stderr, flush=True))\n"
        "daemon.main(['--config', '/dev/null', '--log-format', 'json'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "served", result.stderr
