"""The man pages and completions cover every verb and flag of the parsers, and the unit(5)
page every section and key of the README's unit reference.

The parsers are walked here on their own (not through supervisor.docs_gen.cli_model), so a
verb or flag that another change adds and the generator misses fails here, as does a README
table row that does not reach the page.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from supervisor.cli import main as cli_main
from supervisor.daemon import build_parser as daemon_parser
from supervisor.docs_gen import generate, roff
from supervisor.docs_gen.__main__ import main as docs_gen_main
from supervisor.docs_gen.manpages import UNIT_SECTION, summary

README = Path(__file__).resolve().parents[3] / "README.md"


def _walk(parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, list[str]]]:
    """(top-level flags, {verb: its flags})."""
    top: list[str] = []
    verbs: dict[str, list[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, sub in action.choices.items():
                verbs[verb] = [f for a in sub._actions for f in a.option_strings]
        else:
            top += action.option_strings
    return top, verbs


PARSERS = {
    "sandboxctl": cli_main.build_parser(cli_main._modules([])),
    "sandboxd": daemon_parser(),
}
MAN = {"sandboxctl": "man/sandboxctl.1", "sandboxd": "man/sandboxd.8"}


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return generate.render(README.read_text(encoding="utf-8"))


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_verb_and_flag_is_in_the_page_and_both_completions(
    prog: str, files: dict[str, str]
) -> None:
    top, verbs = _walk(PARSERS[prog])
    page, bash, zsh = files[MAN[prog]], files[f"bash/{prog}"], files[f"zsh/_{prog}"]
    assert top, prog
    for flag in top:
        assert roff.escape(flag) in page, (prog, flag)
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", bash), (prog, flag)
        assert flag in zsh, (prog, flag)
    for verb, flags in verbs.items():
        assert f'.SS "{verb}"' in page, verb
        assert re.search(rf"^    {re.escape(verb)}\)$", bash, re.M), verb
        assert re.search(rf"^        {re.escape(verb)}\) _arguments", zsh, re.M), verb
        section = page.split(f'.SS "{verb}"', 1)[1].split(".SS ", 1)[0]
        bash_arm = bash.split(f"\n    {verb})\n", 1)[1].split("\n        ;;\n", 1)[0]
        zsh_arm = zsh.split(f"\n        {verb}) _arguments", 1)[1].split(" ;;", 1)[0]
        for flag in flags:
            assert roff.escape(flag) in section, (verb, flag)
            assert f" {flag}" in bash_arm or f"'{flag}" in bash_arm, (verb, flag)
            assert flag in zsh_arm, (verb, flag)
    if prog == "sandboxctl":
        assert set(verbs) == set(cli_main.COMMANDS)


def test_the_unit_page_has_every_section_and_key_of_the_readme(files: dict[str, str]) -> None:
    page = files["man/sandboxd.unit.5"]
    body = roff.section(README.read_text(encoding="utf-8"), UNIT_SECTION)
    headings = re.findall(r"^### (.+)$", body, re.M)
    keys = re.findall(r"^\| `([^`]+)` \|", body, re.M)
    assert len(headings) >= 8 and len(keys) >= 40, (headings, keys)
    for heading in headings:
        assert f'.SS "{roff.inline(heading)}"' in page, heading
    for key in keys:
        assert f"\\fB{roff.escape(key)}\\fR" in page, key


def test_the_daemon_page_has_the_config_reference(files: dict[str, str]) -> None:
    page = files["man/sandboxd.8"]
    for key in ("units_dir", "cgroup_parent", "on_exit", "log_format"):
        assert f"\\fB{roff.escape(key)}\\fR" in page, key


@pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff")
def test_pages_render_without_warnings(tmp_path: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        if rel.startswith("man/"):
            out = subprocess.run(
                ["groff", "-man", "-ww", "-z", "-Tutf8"],
                input=text.encode(), capture_output=True, check=True,
            )  # fmt: skip
            assert out.stderr == b"", (rel, out.stderr.decode())


def test_the_bash_scripts_parse(files: dict[str, str]) -> None:
    for rel, text in files.items():
        if rel.startswith("bash/"):
            subprocess.run(["bash", "-n"], input=text.encode(), check=True)


def _complete(script: Path, words: list[str]) -> list[str]:
    """What bash offers for `words` (the last one is being typed)."""
    array = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    shell = (
        f"source {script}; COMP_WORDS=({array}); COMP_CWORD={len(words) - 1}; "
        '_sandboxctl; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    out = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.split("\n") if line]


def test_bash_completes_verbs_flags_and_unit_names(tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.mkdir()
    (units / "fallback.toml").write_text("")
    (units / "not-a-unit.txt").write_text("")
    (units / "tmpl@.toml").write_text("")  # a template is not a unit
    text = generate.render(None, units_dir=units)["bash/sandboxctl"]
    script = tmp_path / "sandboxctl.bash"
    script.write_text(text)
    # A stand-in for a sandboxctl that reaches a daemon: status --json as the daemon answers.
    ctl = tmp_path / "ctl"
    answer = json.dumps({"units": [{"name": "web", "state": "running"}, {"name": "batch"}]})
    ctl.write_text(f"#!/bin/sh\n[ \"$1 $2\" = 'status --json' ] && echo '{answer}'\n")
    ctl.chmod(0o755)
    down = tmp_path / "down"  # one that cannot reach it (exit 5)
    down.write_text("#!/bin/sh\nexit 5\n")
    down.chmod(0o755)

    assert _complete(script, [str(ctl), ""]) == list(cli_main.COMMANDS)
    assert _complete(script, [str(ctl), "re"]) == ["reload", "restart"]
    assert _complete(script, [str(ctl), "logs", "--f"]) == ["--follow"]
    assert _complete(script, [str(ctl), "logs", ""]) == ["web", "batch"]
    assert _complete(script, [str(ctl), "logs", "-n", "5", "w"]) == ["web"]
    assert _complete(script, [str(ctl), "logs", "web", ""]) == []  # one UNIT only
    assert _complete(script, [str(ctl), "status", "web", ""]) == ["web", "batch"]
    assert _complete(script, [str(ctl), "events", "--since", ""]) == []  # a number
    assert _complete(script, [str(down), "stop", ""]) == ["fallback"]
    assert _complete(script, [str(ctl), "cat", "--e"]) == ["--effective"]
    assert _complete(script, [str(ctl), "cat", ""]) == ["web", "batch"]
    assert _complete(script, [str(ctl), "exec", "web", "--", "bas"]) >= ["bash"]
    assert _complete(script, [str(ctl), "validate", str(units / "fa")]) == [
        str(units / "fallback.toml")
    ]


def test_the_command_writes_every_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert docs_gen_main(["--readme", str(README), str(tmp_path)]) == 0
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(generate.render(README.read_text(encoding="utf-8")))
    assert docs_gen_main(["--readme", str(tmp_path / "missing.md"), str(tmp_path)]) == 1
    assert "missing.md" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh")
def test_the_zsh_scripts_parse_and_list_unit_names(tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.mkdir()
    (units / "fallback.toml").write_text("")
    (units / "tmpl@.toml").write_text("")  # a template is not a unit
    files = generate.render(None, units_dir=units)
    for rel, text in files.items():
        if rel.startswith("zsh/"):
            subprocess.run(["zsh", "-n"], input=text.encode(), check=True)
    script = tmp_path / "_sandboxctl"
    script.write_text(files["zsh/_sandboxctl"])
    ctl = tmp_path / "ctl"
    ctl.write_text('#!/bin/sh\necho \'{"units": [{"name": "web"}, {"name": "db"}]}\'\n')
    ctl.chmod(0o755)
    # The unit lister alone, outside the completion system: _wanted stubbed to print what it
    # would offer, _arguments to do nothing (sourcing the file runs _sandboxctl once).
    shell = (
        "_arguments() { :; }; _wanted() { local a=${@[-1]}; print -rl -- ${(P)a}; }; "
        f"source {script}; _sandboxctl_cmd=$1 _sandboxctl_units"
    )

    def offered(cmd: Path) -> list[str]:
        argv = ["zsh", "-f", "-c", shell, "zsh", str(cmd)]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()

    assert offered(ctl) == ["web", "db"]
    assert offered(tmp_path / "missing") == ["fallback"]


def test_the_name_line_is_the_first_clause_of_the_description() -> None:
    assert summary("Declarative sandbox supervisor: runs each unit. More.") == (
        "Declarative sandbox supervisor"
    )
    assert summary("control sandboxd, the declarative sandbox supervisor") == (
        "control sandboxd, the declarative sandbox supervisor"
    )
    assert summary("Runs in the foreground (really).") == "Runs in the foreground (really)"
