"""sandboxctl's entry point: a verb imports its own module only; help and errors see them all."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.cli.main import COMMANDS, build_parser, main
from supervisor.errors import EXIT_USAGE


def _run(code: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", code]
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)


def test_a_verb_imports_only_its_module(tmp_path: Path) -> None:
    (tmp_path / "web.toml").write_text('[service]\nexec = ["/bin/true"]\n')
    result = _run(
        "import sys\n"
        "from supervisor.cli.main import main\n"
        f"code = main(['validate', {str(tmp_path)!r}])\n"
        "print(code, sorted(m for m in sys.modules if m.startswith('supervisor.cli.commands.')))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "0 ['supervisor.cli.commands.validate']"


def test_help_lists_every_verb() -> None:
    result = _run("import sys\nfrom supervisor.cli.main import main\nsys.exit(main(['--help']))")
    assert result.returncode == 0, result.stderr
    for verb in COMMANDS:
        assert f"    {verb}" in result.stdout, verb


def test_an_unknown_verb_is_a_usage_error_naming_the_verbs() -> None:
    result = _run("import sys\nfrom supervisor.cli.main import main\nsys.exit(main(['frob']))")
    assert result.returncode == 2
    assert "invalid choice: 'frob'" in result.stderr
    assert all(verb in result.stderr for verb in COMMANDS)


@pytest.mark.parametrize(
    ("argv", "usage", "bad"),
    [
        (["logs", "--bogus"], "usage: sandboxctl logs ", "--bogus"),  # UNIT missing too
        (["logs", "web", "--bogus"], "usage: sandboxctl logs ", "--bogus"),
        (["status", "--json", "-x"], "usage: sandboxctl status ", "-x"),
        (["start", "web", "--nope=1"], "usage: sandboxctl start ", "--nope=1"),
        (["--bogus", "status"], "usage: sandboxctl [-h]", "--bogus"),  # before the verb
    ],
)
def test_an_unknown_option_shows_the_usage_of_the_verb_it_follows(
    argv: list[str], usage: str, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    assert err.splitlines()[-1].endswith(f"error: unrecognized arguments: {bad}"), err


def test_exec_passes_options_after_the_unit_to_the_command() -> None:
    parser = build_parser({"exec": importlib.import_module(COMMANDS["exec"])})
    for argv in (["exec", "web", "--", "ls", "--bogus"], ["exec", "web", "ls", "--bogus"]):
        args, extra = parser.parse_known_args(argv)
        assert not extra and args.argv[-2:] == ["ls", "--bogus"], argv


def test_every_argument_of_every_verb_says_what_it_is() -> None:
    # Completions and man pages are generated from these texts.
    parser = build_parser({verb: importlib.import_module(m) for verb, m in COMMANDS.items()})
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, sub in action.choices.items():
                for arg in sub._actions:
                    assert arg.help, (verb, arg.option_strings or arg.dest)
