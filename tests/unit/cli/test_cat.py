"""`sandboxctl cat UNIT [--effective]` through the real entry point, on real unit files."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from supervisor.cli.main import main
from supervisor.errors import EXIT_FAILURE, EXIT_NO_SUCH_UNIT, EXIT_OK
from supervisor.unit.loader import UnitLoader
from supervisor.unit.schema import UnitFile
from supervisor.unit.spec import UnitSpec

TEMPLATE = """\
[service]
exec = ["/bin/echo", "%i"]

[resources]
memory_max = "64M"
"""
DROPIN = '[resources]\nmemory_max = "32M"\n'


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def units(tmp_path: Path) -> Path:
    (tmp_path / "web@.toml").write_text(TEMPLATE)
    (tmp_path / "web@8080.toml").write_text("")
    (tmp_path / "web@9090.toml").symlink_to("web@.toml")
    (tmp_path / "web@.toml.d").mkdir()
    (tmp_path / "web@.toml.d" / "mem.toml").write_text(DROPIN)
    (tmp_path / "plain.toml").write_text('[service]\nexec = ["/bin/true"]')  # no final newline
    return tmp_path


def test_cat_prints_each_file_under_its_path_in_merge_order(
    units: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "cat", "--units-dir", str(units), "web@8080")
    assert (code, err) == (EXIT_OK, "")
    assert out == (
        f"# {units}/web@8080.toml (empty: an instance of the template that follows)\n"
        f"\n# {units}/web@.toml\n{TEMPLATE}"
        f"\n# {units}/web@.toml.d/mem.toml\n{DROPIN}"
    )
    out = run(capsys, "cat", "--units-dir", str(units), "web@9090")[1]
    assert out.startswith(f"# {units}/web@9090.toml -> web@.toml (an instance: ")
    out = run(capsys, "cat", "--units-dir", str(units), "plain")[1]
    assert out == f'# {units}/plain.toml\n[service]\nexec = ["/bin/true"]\n'


def test_effective_is_the_merged_unit_with_defaults_and_parses_back(
    units: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "cat", "--units-dir", str(units), "web@8080", "--effective")
    assert code == EXIT_OK
    marker = "# effective: web@8080 as it will run"
    effective = out[out.index(marker) :]
    data = tomllib.loads(effective)
    assert data["service"]["exec"] == ["/bin/echo", "8080"]
    assert data["resources"]["memory_max"] == "32M"
    assert data["restart"]["policy"] == "on-failure"  # a default, filled in
    assert "# cpu_max: not set" in effective and "# [health]: not set" in effective
    # What it prints is what the daemon will run: the same spec, the same hash.
    spec = UnitLoader(host_checks=False).load_directory(units).specs["web@8080"]
    assert UnitSpec("web@8080", "", UnitFile.model_validate(data)).hash == spec.hash


def test_a_rich_unit_round_trips_through_effective(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rich.toml").write_text(
        '[service]\nexec = ["/bin/sh", "-c", "echo \\"hi\\"\\tthere"]\n'
        'env = { "A B" = "1", C = "\\u00e9" }\n'
        '[sandbox]\nmounts = [{ type = "tmpfs", target = "/cache", size = "8M" },'
        ' { source = "/srv", target = "/srv" }]\n'
        '[health]\nexec = ["/bin/true"]\n[resources]\ncpu_max = 0.5\npids_max = "max"\n'
    )
    out = run(capsys, "cat", "--units-dir", str(tmp_path), "--effective", "rich")[1]
    data = tomllib.loads(out[out.index("# effective") :])
    spec = UnitLoader(host_checks=False).load_directory(tmp_path).specs["rich"]
    assert UnitFile.model_validate(data) == spec.unit


def test_an_invalid_unit_prints_its_files_and_the_problems(
    units: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (units / "web@.toml.d" / "zz.toml").write_text("[resources]\nmemroy_max = 1\n")
    code, out, err = run(capsys, "cat", "--units-dir", str(units), "web@8080", "--effective")
    assert code == EXIT_FAILURE
    assert f"# {units}/web@.toml.d/zz.toml\n" in out and "# effective" not in out
    assert err == (
        f"{units}/web@.toml.d/zz.toml:2: resources.memroy_max: unknown key "
        '(did you mean "memory_max"?)\n'
    )


@pytest.mark.parametrize("name", ["nope", "web@", "web@.toml"])
def test_no_such_unit(units: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, err = run(capsys, "cat", "--units-dir", str(units), name)
    assert (code, out) == (EXIT_NO_SUCH_UNIT, "")
    assert err.startswith(f"sandboxctl: no such unit: {name}")
    assert ("a template is not a unit" in err) == name.startswith("web@")


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "cat", "--help")
    assert code == EXIT_OK
    assert "EXAMPLE:\n  sandboxctl cat web@8080 " in out


def test_effective_keeps_listen_entries_and_hides_credential_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "act.toml").write_text(
        '[service]\nexec = ["/bin/true"]\n'
        '[credentials]\ntoken = { value = "s3cret-value" }\n'
        '[[listen]]\nunix = "/run/act.sock"\n'
        '[[listen]]\nunix = "/run/act2.sock"\nname = "admin"\n'
    )
    code, out, _ = run(capsys, "cat", "--units-dir", str(tmp_path), "act", "--effective")
    assert code == EXIT_OK
    effective = out[out.index("# effective: act") :]
    assert "s3cret-value" not in effective
    data = tomllib.loads(effective)
    assert [entry["unix"] for entry in data["listen"]] == ["/run/act.sock", "/run/act2.sock"]
    assert data["listen"][1]["name"] == "admin"
    assert set(data["credentials"]) == {"token"}
