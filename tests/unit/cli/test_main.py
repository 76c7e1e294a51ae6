"""sandboxctl's entry point: a verb imports its own module only; help and errors see them all."""

from __future__ import annotations

import argparse
import importlib
import random
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.cli import main as cli_main
from supervisor.cli import simple, verbs
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


# The verbs whose plainly valid lines main.simple_args reads without argparse: every verb that
# only asks the daemon, but `exec` (it enters the sandbox itself: its imports are the cost).
SIMPLE_VERBS = [
    "events", "images", "logs", "reload", "restart", "run", "start", "status", "stop", "top",
]  # fmt: skip


def _spec(verb: str) -> simple.Spec | None:
    spec: simple.Spec | None = getattr(cli_main._load(COMMANDS[verb]), "SIMPLE", None)
    return spec


def test_the_verbs_that_only_ask_the_daemon_have_a_simple_spec() -> None:
    assert [verb for verb in sorted(COMMANDS) if _spec(verb) is not None] == SIMPLE_VERBS


@pytest.mark.parametrize("verb", SIMPLE_VERBS)
def test_a_verbs_simple_spec_is_its_parser(verb: str) -> None:
    """SIMPLE says what the verb's parser takes: its positional, each flag and each option
    with its type, default and choices, its exclusive group; a new option fails here until
    the spec knows it."""
    spec = _spec(verb)
    assert spec is not None
    parser = _verb_parser(verb)
    actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    positionals = [(a.dest, a.nargs, a.choices) for a in actions if not a.option_strings]
    expected = [] if spec.positional is None else [(spec.positional, spec.nargs, spec.choices)]
    assert positionals == expected
    strings = set()
    for action in (a for a in actions if a.option_strings):
        for option in action.option_strings:
            strings.add(option)
            if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
                stored = isinstance(action, argparse._StoreTrueAction)
                assert spec.flags[option] == (action.dest, stored), option
                continue
            append = type(action) is argparse._AppendAction
            assert append or type(action) is argparse._StoreAction, option
            assert action.nargs is None, option
            got = spec.options[option]
            assert (got.dest, got.convert, got.default, got.choices, got.append) == (
                action.dest, action.type, None if append else action.default, action.choices,
                append,
            ), option  # fmt: skip
            if append:  # the spec's default is a fresh [] each time
                assert action.default == [], option
    assert strings == set(spec.flags) | set(spec.options)
    groups = [{a.dest for a in g._group_actions} for g in parser._mutually_exclusive_groups]
    assert groups == ([set(spec.exclusive)] if spec.exclusive else [])


def _words(spec: simple.Spec) -> list[str]:
    """A verb's options and flags, `--opt=VALUE` forms, values good and bad, names, a choice,
    misspellings, an abbreviation, help, `--` and `-`."""
    words = ["web", "db", "prune", "", "--js", "--nope", "-h", "--", "-", "5", "0.5", "-1", "x",
             "a.b=1"]  # fmt: skip
    words += [*spec.flags, *spec.options, "cpu", "mem%"]
    words += [f"{o}=5" for o in spec.options if o.startswith("--")] + ["--json=1", "-n5"]
    return words


def _argvs(spec: simple.Spec) -> list[list[str]]:
    """Every line of up to three words, and as many longer ones (four to six words) drawn at
    random, the same for every run: plainly valid ones and the ones argparse must read."""
    words = _words(spec)
    lines: list[list[str]] = [[]]
    for size in range(3):
        lines += [[*line, w] for line in lines if len(line) == size for w in words]
    draw = random.Random(1)
    lines += [draw.choices(words, k=draw.randint(4, 6)) for _ in range(len(lines))]
    return lines


@pytest.mark.parametrize("verb", SIMPLE_VERBS)
def test_a_simple_line_is_read_as_argparse_reads_it(verb: str) -> None:
    """Where simple_args reads a line, argparse reads it the same (the verb's `run` sees the
    same values); where argparse would fail or print help, simple_args leaves it to argparse
    (None)."""
    spec = _spec(verb)
    assert spec is not None
    parser = build_parser(cli_main._modules([verb]))
    read = 0
    for words in _argvs(spec):
        argv = [verb, *words]
        got = cli_main.simple_args(argv)
        if got is None:
            continue
        read += 1
        try:
            args, extra = parser.parse_known_args(argv)
        except SystemExit:
            pytest.fail(f"simple_args read {argv}, argparse refuses it")
        assert extra == [], argv
        expected = {k: v for k, v in vars(args).items() if k != "run"}  # set_defaults' own
        assert vars(got) == expected, argv
    assert read >= 10


@pytest.mark.parametrize(
    "argv",
    [
        ["status"], ["status", "web", "--json"], ["start", "web", "db"], ["stop", "web"],
        ["restart", "web", "--json"], ["reload"], ["reload", "--no-wait", "--json"],
        ["reload", "--timeout", "5"], ["images"], ["images", "prune"], ["images", "--json"],
        ["events", "--no-follow"], ["events", "web", "--since", "3", "--json"],
        ["events", "--replay=0"], ["top", "--once"], ["top", "-d", "0.5", "--sort", "mem"],
        ["logs", "web", "-n", "50", "-f"], ["logs", "web", "--lines=5", "--json"],
        ["logs", "web", "--log-dir", "/srv/log"],
        ["run", "--wait", "--rm", "-p", "resources.memory_max=64M", "sleep", "1"],
        ["run", "--name", "scratch", "--property=sandbox.root=/srv", "sh", "-c", "x --y"],
    ],
)  # fmt: skip
def test_the_common_lines_are_read_without_argparse(argv: list[str]) -> None:
    assert cli_main.simple_args(argv) is not None


def test_a_simple_line_imports_neither_argparse_nor_json() -> None:
    result = _run(
        "import sys\n"
        "from supervisor.cli import main\n"
        "assert main.simple_args(['status', 'web', '--json']) is not None\n"
        "print(sorted({'argparse', 're', 'json'} & set(sys.modules)))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


_SAME_TEXT = """\
import contextlib, io, sys
from supervisor.cli.main import COMMANDS, _load, build_parser, main
argv = {argv!r}
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = main(argv)
imported = sorted(m for m in sys.modules if m.startswith("supervisor.cli.commands."))
full_out, full_err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(full_out), contextlib.redirect_stderr(full_err):
    try:
        build_parser({{verb: _load(m) for verb, m in COMMANDS.items()}}).parse_args(argv)
        full_code = 0
    except SystemExit as exc:
        full_code = exc.code
same = (code, out.getvalue(), err.getvalue()) == (full_code, full_out.getvalue(),
                                                  full_err.getvalue())
print(imported, same, code)
"""


@pytest.mark.parametrize(("argv", "code"), [(["--help"], 0), (["frob"], 2), ([], 2),
                                            (["--version"], 0)])  # fmt: skip
def test_a_line_without_a_verb_lists_the_verbs_without_importing_them(
    argv: list[str], code: int
) -> None:
    """--help, an unknown verb and none print what the parser of every verb's module prints,
    byte for byte, from verbs.py's help lines alone: no verb module is imported."""
    result = _run(_SAME_TEXT.format(argv=argv))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"[] True {code}"


def test_every_verb_has_its_help_line_in_the_order_of_the_table() -> None:
    assert list(verbs.HELP) == list(COMMANDS)
    for verb, module in COMMANDS.items():
        assert verbs.HELP[verb] == importlib.import_module(module).HELP, verb
