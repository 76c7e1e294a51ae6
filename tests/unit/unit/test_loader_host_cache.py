"""The loader's host-check cache (loader.py's module doc): a clean unit whose file is unchanged
is not checked again; every change that makes a new spec is (an edit, a drop-in, a template,
a removed and re-added file), a unit with warnings is checked at every load, and the host's
refusals (`host_errors`) are never cached."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from supervisor.unit import checks
from supervisor.unit.diagnostics import UnitError
from supervisor.unit.loader import UnitLoader
from supervisor.unit.spec import UnitSpec

SERVICE = '[service]\nexec = ["/bin/true"]\n'
WriteUnit = Callable[..., Path]  # the `write_unit` fixture (conftest.py)


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The units whose host warnings were computed, in order, across loads."""
    names: list[str] = []
    real = checks.host_warnings

    def counting(spec: UnitSpec) -> list[UnitError]:
        names.append(spec.name)
        return real(spec)

    monkeypatch.setattr(checks, "host_warnings", counting)
    return names


def test_a_clean_unchanged_unit_is_not_checked_again(
    write_unit: WriteUnit, tmp_path: Path, checked: list[str]
) -> None:
    write_unit("web")
    write_unit("db")
    loader = UnitLoader()
    first = loader.load_directory(tmp_path)
    assert sorted(checked) == ["db", "web"] and not first.warnings
    checked.clear()
    second = loader.load_directory(tmp_path)
    assert checked == [] and second.specs["web"] is first.specs["web"]


def test_a_touch_with_the_same_content_keeps_the_check(
    write_unit: WriteUnit, tmp_path: Path, checked: list[str]
) -> None:
    path = write_unit("web")
    loader = UnitLoader()
    first = loader.load_directory(tmp_path)
    checked.clear()
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # new mtime, same bytes
    path.write_text(SERVICE)  # and rewritten: a new mtime again, same content
    second = loader.load_directory(tmp_path)
    assert second.specs["web"] is first.specs["web"] and checked == []


def test_an_edit_is_checked(write_unit: WriteUnit, tmp_path: Path, checked: list[str]) -> None:
    path = write_unit("web")
    loader = UnitLoader()
    loader.load_directory(tmp_path)
    checked.clear()
    missing = tmp_path / "nowhere" / "tool"
    path.write_text(f'[service]\nexec = ["{missing}"]\n')
    result = loader.load_directory(tmp_path)
    assert checked == ["web"]
    assert [w.message for w in result.warnings["web"]] == [
        f"warning: {missing} does not exist on this host"
    ]


def test_a_removed_and_added_again_file_is_checked(
    write_unit: WriteUnit, tmp_path: Path, checked: list[str]
) -> None:
    path = write_unit("web")
    loader = UnitLoader()
    loader.load_directory(tmp_path)
    path.unlink()
    assert "web" not in loader.load_directory(tmp_path).specs
    checked.clear()
    write_unit("web")
    write_unit("new")
    assert set(loader.load_directory(tmp_path).specs) == {"web", "new"}
    assert sorted(checked) == ["new", "web"]


def test_a_unit_with_warnings_is_checked_at_every_load_and_clears_once_fixed(
    write_unit: WriteUnit, tmp_path: Path, checked: list[str]
) -> None:
    tool = tmp_path / "bin" / "tool"
    write_unit("web", f'[service]\nexec = ["{tool}"]\n')
    loader = UnitLoader()
    assert "web" in loader.load_directory(tmp_path).warnings
    assert "web" in loader.load_directory(tmp_path).warnings
    assert checked == ["web", "web"]
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert "web" not in loader.load_directory(tmp_path).warnings  # the host was fixed
    checked.clear()
    loader.load_directory(tmp_path)
    assert checked == []  # clean now: cached like any other


def test_a_clean_unit_whose_host_path_went_is_left_to_the_launch(
    write_unit: WriteUnit, tmp_path: Path, checked: list[str]
) -> None:
    """The decision the cache makes (loader.py): a clean unchanged unit is not checked again,
    so a binary removed after its check is reported by its launch, not by a reload."""
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    write_unit("web", f'[service]\nexec = ["{tool}"]\n')
    loader = UnitLoader()
    assert not loader.load_directory(tmp_path).warnings
    tool.unlink()
    assert not loader.load_directory(tmp_path).warnings
    assert "web" in UnitLoader().load_directory(tmp_path).warnings  # validate's fresh loader


def test_a_dropin_change_is_checked(
    write_unit: WriteUnit, tmp_path: Path, checked: list[str]
) -> None:
    write_unit("web")
    dropins = tmp_path / "web.toml.d"
    dropins.mkdir()
    (dropins / "10-mem.toml").write_text('[resources]\nmemory_max = "64M"\n')
    loader = UnitLoader()
    assert not loader.load_directory(tmp_path).warnings
    missing = tmp_path / "nowhere"
    (dropins / "20-exec.toml").write_text(f'[service]\nexec = ["{missing}"]\n')
    result = loader.load_directory(tmp_path)
    assert checked[-1] == "web" and "web" in result.warnings
    (dropins / "20-exec.toml").unlink()
    assert not loader.load_directory(tmp_path).warnings


def test_a_template_change_is_checked(
    write_unit: WriteUnit, tmp_path: Path, checked: list[str]
) -> None:
    write_unit("web@", '[template]\ninstances = ["a"]\n' + SERVICE)
    loader = UnitLoader()
    assert set(loader.load_directory(tmp_path).specs) == {"web@a"}
    missing = tmp_path / "nowhere"
    write_unit("web@", f'[template]\ninstances = ["a"]\n[service]\nexec = ["{missing}"]\n')
    result = loader.load_directory(tmp_path)
    assert checked[-1] == "web@a" and "web@a" in result.warnings


PUBLISHES = SERVICE + '[network]\nmode = "bridge"\nports = ["18090:80"]\n'


def test_the_hosts_refusals_are_never_cached(
    write_unit: WriteUnit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_unit("web", PUBLISHES)
    write_unit("db")  # no port, no pressure limit: nothing the host can refuse it
    loader = UnitLoader()
    loader.load_directory(tmp_path)
    asked: list[str] = []

    def taken(spec: UnitSpec) -> list[UnitError]:  # a host process took the port
        asked.append(spec.name)
        return [UnitError(spec.path, "network.ports[0]", "taken")]

    monkeypatch.setattr(checks, "host_errors", taken)
    result = loader.load_directory(tmp_path)
    assert "web" not in result.specs and [e.message for e in result.errors["web"]] == ["taken"]
    assert asked == ["web"] and "db" in result.specs
    monkeypatch.setattr(checks, "host_errors", lambda spec: [])  # and let it go
    assert "web" in loader.load_directory(tmp_path).specs


def test_an_edit_that_names_a_unit_or_a_port_is_checked_across_units(
    write_unit: WriteUnit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which checks concern a unit is kept per spec (checks.concerns): an edit makes a new
    spec, and the next load checks it as a fresh loader would."""
    write_unit("web")
    write_unit("db")
    loader = UnitLoader(host_checks=False)
    assert set(loader.load_directory(tmp_path).specs) == {"db", "web"}
    write_unit("web", SERVICE + 'after = ["nobody"]\n')
    write_unit("db", PUBLISHES)
    write_unit("cache", PUBLISHES)  # the same port: "cache" is first in name order, db refused
    result = loader.load_directory(tmp_path)
    fresh = UnitLoader(host_checks=False).load_directory(tmp_path)
    assert result.errors == fresh.errors and set(result.specs) == set(fresh.specs) == {"cache"}
    assert [e.message for e in result.errors["web"]] == ['no unit named "nobody"']
    assert 'of unit "cache"' in result.errors["db"][0].message
