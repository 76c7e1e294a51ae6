"""A verb that only asks the daemon imports none of the daemon's heavy packages (issue 23).

Its imports are most of its time: each of these was once on the path and cost milliseconds of
every call. Checked in a fresh interpreter against the real API server; what the interpreter
had imported before sandboxctl's entry point (site, an editable install's finder) is not
counted.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from supervisor.api.testing import FakeController, ServerThread

HEAVY = (
    "pydantic", "structlog", "aiohttp", "asyncio", "http.client", "email", "ssl", "typing",
    "urllib.parse", "supervisor.api", "supervisor.engine", "supervisor.unit", "supervisor.config",
    "socket", "selectors",  # unixhttp uses _socket, the C type under them
)  # fmt: skip
PROBE = """
import contextlib, io, sys
before = set(sys.modules)
from supervisor.cli.main import main
with contextlib.redirect_stdout(io.TextIOWrapper(io.BytesIO())):  # logs writes bytes
    code = main(sys.argv[1:])
new = sorted(set(sys.modules) - before)
import json
print(json.dumps({"code": code, "new": new}))
"""


@pytest.fixture(autouse=True)
def web_log(controller: FakeController) -> None:
    """Output for `logs web` to print."""
    (controller.log_dir / "web.log").write_text("one\ntwo\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "--json"],
        ["status", "web"],
        ["stop", "cron"],
        ["start", "cron"],
        ["restart", "web"],
        ["reload"],
        ["images"],
        ["top", "--once"],
        ["events", "--no-follow"],
        ["logs", "web", "-n", "5"],
    ],
)
def test_a_daemon_only_verb_imports_nothing_heavy(daemon: ServerThread, argv: list[str]) -> None:
    heavy = _imported(argv, HEAVY)
    assert heavy == [], f"sandboxctl {' '.join(argv)} imported {heavy}"


# What the verbs with a simple spec (every verb that only asks the daemon, but exec)
# do without: argparse (their plainly valid lines are read by main.simple_args), the json
# package and the `re` both import (answers are read by cli/jsonread.py; json is imported only
# to write --json output or a request's body), importlib (main._load), dataclasses (inspect,
# ast, dis, tokenize), pathlib, top's terminal modules, nor enum, functools and collections
# (the contract's names are cli/names.py's strings).
LEAN = (*HEAVY, "argparse", "json", "re", "gettext", "locale", "importlib", "dataclasses",
        "inspect", "pathlib", "shutil", "termios", "tty", "supervisor.cli.logfiles", "enum",
        "functools", "collections", "supervisor.contract")  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "--json"],
        ["status", "web"],
        ["stop", "cron"],
        ["start", "cron"],
        ["restart", "db"],
        ["reload"],
        ["reload", "--no-wait", "--timeout", "5"],
        ["images"],
        ["images", "prune"],
        ["top", "--once", "-d", "0.1", "--sort", "mem"],
        ["events", "--no-follow"],
        ["events", "web", "--replay", "3", "--no-follow"],
        ["logs", "web", "-n", "5"],
        # --json is written by cli/jsonwrite.py, not the json package.
        ["status", "web", "--json"],
        ["start", "cron", "--json"],
        ["reload", "--json"],
        ["images", "--json"],
        ["top", "--once", "--json", "-d", "0.1"],
        ["events", "--no-follow", "--json"],
        ["logs", "web", "--json"],
        ["run", "--name", "lean", "true"],  # a bare name, looked for without shutil
    ],
)
def test_a_simple_verb_imports_neither_argparse_nor_json(
    daemon: ServerThread, argv: list[str]
) -> None:
    heavy = _imported(argv, LEAN)
    assert heavy == [], f"sandboxctl {' '.join(argv)} imported {heavy}"


def _imported(argv: list[str], heavy_names: tuple[str, ...]) -> list[str]:
    """What `sandboxctl ARGV` imported of `heavy_names` (or their submodules)."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["code"] == 0, result.stderr
    return [m for m in answer["new"] if any(m == h or m.startswith(h + ".") for h in heavy_names)]
