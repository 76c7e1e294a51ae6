"""sandboxctl's entry point: a verb imports its own module only; help and errors see them all."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.cli import main as cli_main
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


def _verb_parser(verb: str) -> argparse.ArgumentParser:
    parser = build_parser(cli_main._modules([verb]))
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    verb_parser: argparse.ArgumentParser = subparsers.choices[verb]
    return verb_parser


@pytest.mark.parametrize("verb", sorted(cli_main.SIMPLE))
def test_the_simple_verbs_table_is_their_parsers(verb: str) -> None:
    """SIMPLE says what each of these verbs' parsers takes: UNIT names (`*` or `+`) and
    store_true flags, nothing else; a new option on one of them fails here until SIMPLE (and
    simple_args) know it."""
    least, flags = cli_main.SIMPLE[verb]
    actions = [a for a in _verb_parser(verb)._actions if not isinstance(a, argparse._HelpAction)]
    positionals = [a for a in actions if not a.option_strings]
    assert [(a.dest, a.nargs) for a in positionals] == [("units", "*" if least == 0 else "+")]
    options = [a for a in actions if a.option_strings]
    assert all(isinstance(a, argparse._StoreTrueAction) for a in options)
    assert sorted(o for a in options for o in a.option_strings) == sorted(flags)


def _argvs() -> list[list[str]]:
    """Every line of up to four words from names, the verbs' flags, their misspellings, an
    abbreviation, help, `--` and `-`: plainly valid ones and the ones argparse must read."""
    words = ["web", "db", "--json", "--js", "--nope", "-h", "--", "-", ""]
    lines: list[list[str]] = [[]]
    for size in range(4):
        lines += [[*line, w] for line in lines if len(line) == size for w in words]
    return lines


@pytest.mark.parametrize("verb", sorted(cli_main.SIMPLE))
def test_a_simple_line_is_read_as_argparse_reads_it(verb: str) -> None:
    """Where simple_args reads a line, argparse reads it the same (the verb's `run` sees the
    same names and flags); where argparse would fail or print help, simple_args leaves it to
    argparse (None)."""
    parser = build_parser(cli_main._modules([verb]))
    read = 0
    for words in _argvs():
        argv = [verb, *words]
        simple = cli_main.simple_args(argv)
        if simple is None:
            continue
        read += 1
        try:
            args, extra = parser.parse_known_args(argv)
        except SystemExit:
            pytest.fail(f"simple_args read {argv}, argparse refuses it")
        assert extra == [], argv
        expected = {k: v for k, v in vars(args).items() if k != "run"}  # set_defaults' own
        assert vars(simple) == expected, argv
    assert read > 50  # the common lines are read without argparse


def test_a_simple_line_imports_neither_argparse_nor_json() -> None:
    result = _run(
        "import sys\n"
        "from supervisor.cli import main\n"
        "assert main.simple_args(['status', 'web', '--json']) is not None\n"
        "print(sorted({'argparse', 're', 'json'} & set(sys.modules)))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
