"""sandboxctl's entry point: a verb imports its own module only; help and errors see them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from supervisor.cli.main import COMMANDS


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
