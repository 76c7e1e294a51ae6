"""Host checks name a symlink in a path the sandbox mounts: the launch will refuse it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from supervisor.unit.checks import host_warnings
from supervisor.unit.loader import load_unit


def warnings_for(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "u.toml"
    path.write_text('[service]\nexec = ["/bin/true"]\n' + text)
    return [str(w) for w in host_warnings(load_unit(path))]


def test_a_bind_source_below_a_swapped_directory(tmp_path: Path) -> None:
    """A neighbour with a writable shared/ replaced shared/app with a link to /etc."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "app").symlink_to("/etc")
    source = tmp_path / "shared" / "app" / "ssl"
    mounts = f"[sandbox]\nmounts = [{{ source = {json.dumps(str(source))}, target = '/ssl' }}]\n"
    assert warnings_for(tmp_path, mounts) == [
        f"{tmp_path}/u.toml: sandbox.mounts[0].source: warning: {tmp_path}/shared/app is a "
        "symlink (to /etc), and sandboxd follows none in a bind source: the unit will fail to "
        "start; name the real path"
    ]


def test_a_bind_source_that_is_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    mounts = f"[sandbox]\nmounts = [{{ source = '{tmp_path}/link', target = '/x' }}]\n"
    (found,) = warnings_for(tmp_path, mounts)
    assert f"warning: {tmp_path}/link is a symlink (to {tmp_path}/real)" in found
    real = f"[sandbox]\nmounts = [{{ source = '{tmp_path}/real', target = '/x' }}]\n"
    assert warnings_for(tmp_path, real) == []


def test_a_root_directory_below_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "roots").mkdir()
    (tmp_path / "app").mkdir()
    (tmp_path / "roots" / "app").symlink_to(tmp_path / "app")
    text = f"[sandbox]\nroot = '{tmp_path}/roots/app'\n"
    (found,) = [w for w in warnings_for(tmp_path, text) if "sandbox.root" in w]
    assert found == (
        f"{tmp_path}/u.toml: sandbox.root: warning: {tmp_path}/roots/app is a symlink (to "
        f"{tmp_path}/app), and sandboxd follows none in a root directory: the unit will fail "
        "to start; name the real path"
    )


@pytest.mark.skipif(not os.path.islink("/dev/stdout"), reason="no /dev/stdout symlink here")
def test_a_device_through_a_symlink(tmp_path: Path) -> None:
    (found,) = warnings_for(tmp_path, '[sandbox]\ndevices = [{ path = "/dev/stdout" }]\n')
    assert "sandbox.devices[0].path: warning: /dev/stdout is a symlink" in found
