"""The daemon's directories: modes whatever the umask, tightened, refused when not ours."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

import pytest

from supervisor import daemondirs
from supervisor.config import DaemonConfig

NOBODY = 65534


def _config(base: Path, **extra: object) -> DaemonConfig:
    dirs = {"state_dir": base / "state", "log_dir": base / "log", "data_dir": base / "data"}
    return DaemonConfig.model_validate({**dirs, "socket": base / "control.sock", **extra})


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _a_group() -> tuple[str, int]:
    group = grp.getgrgid(os.getegid())
    return group.gr_name, group.gr_gid


def test_modes_of_new_directories_whatever_the_umask(tmp_path: Path) -> None:
    config = _config(tmp_path)
    old = os.umask(0)
    try:
        daemondirs.prepare(config)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "state") == 0o700
    assert _mode(tmp_path / "data") == 0o700
    assert _mode(tmp_path / "data" / "overlay") == 0o700
    assert _mode(tmp_path / "log") == 0o750


def test_open_directories_are_tightened(tmp_path: Path) -> None:
    work = tmp_path / "data" / "overlay" / "web" / "work"
    upper = tmp_path / "data" / "overlay" / "web" / "upper"
    for path in (work, upper, tmp_path / "state" / "units", tmp_path / "log"):
        path.mkdir(parents=True, exist_ok=True)
    for path in [*tmp_path.rglob("*")]:
        os.chmod(path, 0o777)
    daemondirs.prepare(_config(tmp_path))
    for path in (tmp_path / "data", tmp_path / "data" / "overlay", work.parent, work,
                 tmp_path / "state", tmp_path / "state" / "units"):  # fmt: skip
        assert _mode(path) == 0o700, path
    assert _mode(upper) == 0o777, "the upper dir is the sandbox's root: its mode is the unit's"
    assert _mode(tmp_path / "log") == 0o750


def test_the_log_dir_belongs_to_the_configured_group(tmp_path: Path) -> None:
    name, gid = _a_group()
    daemondirs.prepare(_config(tmp_path, group=name))
    assert (tmp_path / "log").stat().st_gid == gid
    assert _mode(tmp_path / "state") == 0o700, "the socket is elsewhere: the state is private"


def test_the_state_dir_lets_the_group_reach_a_socket_inside_it() -> None:
    name, gid = _a_group()
    config = _config(Path("/x"), group=name, socket=None)
    by_key = {w.key: w for w in daemondirs.wanted(config)}
    assert (by_key["state_dir"].mode, by_key["state_dir"].gid) == (0o750, gid)
    assert (by_key["data_dir"].mode, by_key["data_dir"].gid) == (0o700, 0)
    missing = _config(Path("/x"), group="no-such-group-sbx", socket=None)
    by_key = {w.key: w for w in daemondirs.wanted(missing)}
    assert (by_key["state_dir"].mode, by_key["log_dir"].gid) == (0o700, 0)


def test_one_path_for_two_directories_gets_the_stricter_mode() -> None:
    name, _ = _a_group()
    config = _config(Path("/x"), group=name, log_dir="/x/data")
    (shared,) = [w for w in daemondirs.wanted(config) if w.path == "/x/data"]
    assert (shared.mode, shared.gid) == (0o700, 0)


def test_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(daemondirs.DirectoryError) as info:
        daemondirs.prepare(_config(tmp_path))
    assert str(info.value) == (
        f"data_dir {tmp_path}/data: {tmp_path}/data is a symlink (to {tmp_path}/elsewhere), "
        "and sandboxd follows none here"
    )
    assert _mode(tmp_path / "elsewhere") == 0o777 & ~_umask(), "the target is left alone"


@pytest.mark.parametrize("sub", ["units", "notify", "transient", "netns"])
def test_a_state_subdirectory_replaced_by_a_symlink_is_refused(tmp_path: Path, sub: str) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o755)
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state" / sub).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(daemondirs.DirectoryError) as info:
        daemondirs.prepare(_config(tmp_path))
    assert str(info.value) == (
        f"state_dir {tmp_path}/state: {tmp_path}/state/{sub} is a symlink (to "
        f"{tmp_path}/elsewhere), and sandboxd follows none in its own trees; put the directory "
        "itself there"
    )
    assert (tmp_path / "state" / sub).is_symlink(), "nothing is removed"
    assert _mode(tmp_path / "elsewhere") == 0o755, "the target is left alone"


def test_a_symlinked_parent_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "var").symlink_to(tmp_path / "real")
    with pytest.raises(daemondirs.DirectoryError) as info:
        daemondirs.prepare(_config(tmp_path, log_dir=tmp_path / "var" / "log"))
    assert str(info.value) == (
        f"log_dir {tmp_path}/var/log: its parent {tmp_path}/var is a symlink (to "
        f"{tmp_path}/real); name the real path"
    )


def test_a_world_writable_parent_is_refused(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir()
    os.chmod(tmp_path / "open", 0o777)
    with pytest.raises(daemondirs.DirectoryError, match=r"its parent .*/open is writable by"):
        daemondirs.prepare(_config(tmp_path, data_dir=tmp_path / "open" / "data"))
    os.chmod(tmp_path / "open", 0o1777)  # sticky, as /tmp: others cannot rename our entry
    daemondirs.prepare(_config(tmp_path, data_dir=tmp_path / "open" / "data"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    os.chown(tmp_path / "data", NOBODY, NOBODY)
    with pytest.raises(daemondirs.DirectoryError) as info:
        daemondirs.prepare(_config(tmp_path))
    assert str(info.value).startswith(f"data_dir {tmp_path}/data: owned by uid {NOBODY}")
    os.chown(tmp_path / "data", 0, 0)
    (tmp_path / "nested").mkdir()
    os.chown(tmp_path / "nested", NOBODY, NOBODY)
    with pytest.raises(daemondirs.DirectoryError, match=f"its parent {tmp_path}/nested belongs"):
        daemondirs.prepare(_config(tmp_path, log_dir=tmp_path / "nested" / "log"))


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old
