"""open_nofollow: no symlink in any component, through openat2 or the component walk."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from supervisor.linux.syscalls import mkdir_nofollow, open_nofollow, walk_nofollow

Opener = Callable[..., int]
OPENERS = [pytest.param(open_nofollow, id="openat2"), pytest.param(walk_nofollow, id="walk")]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """shared/app is a symlink to real/ (a neighbour's swap), real/ssl/cert a file."""
    (tmp_path / "real" / "ssl").mkdir(parents=True)
    (tmp_path / "real" / "ssl" / "cert").write_text("secret\n")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "app").symlink_to(tmp_path / "real")
    (tmp_path / "shared" / "link").symlink_to(tmp_path / "real" / "ssl" / "cert")
    return tmp_path


def _loop(opener: Opener, path: Path, flags: int) -> None:
    with pytest.raises(OSError) as info:
        os.close(opener(str(path), flags))
    assert info.value.errno == errno.ELOOP, info.value


@pytest.mark.parametrize("opener", OPENERS)
def test_a_symlinked_parent_is_refused(opener: Opener, tree: Path) -> None:
    for flags in (os.O_PATH, os.O_PATH | os.O_DIRECTORY, os.O_RDONLY | os.O_DIRECTORY):
        _loop(opener, tree / "shared" / "app" / "ssl", flags)
    _loop(opener, tree / "shared" / "app" / "ssl" / "cert", os.O_RDONLY)


@pytest.mark.parametrize("opener", OPENERS)
def test_a_symlink_as_last_component_is_refused_even_with_o_path(
    opener: Opener, tree: Path
) -> None:
    # O_PATH|O_NOFOLLOW alone would hand out an fd for the link itself.
    for flags in (os.O_PATH, os.O_RDONLY, os.O_WRONLY | os.O_CREAT):
        _loop(opener, tree / "shared" / "link", flags)
    assert (tree / "real" / "ssl" / "cert").read_text() == "secret\n"


@pytest.mark.parametrize("opener", OPENERS)
def test_real_paths_open_and_are_close_on_exec(opener: Opener, tree: Path) -> None:
    fd = opener(str(tree / "real" / "ssl" / "cert"), os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"secret\n"
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)
    fd = opener("/", os.O_PATH | os.O_DIRECTORY)
    assert os.fstat(fd).st_ino == os.stat("/").st_ino
    os.close(fd)


@pytest.mark.parametrize("opener", OPENERS)
def test_create_relative_to_a_directory_fd(opener: Opener, tree: Path) -> None:
    dir_fd = os.open(tree / "real", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = opener("new.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd)
        os.close(fd)
        assert (tree / "real" / "new.log").stat().st_mode & 0o777 == 0o600
        with pytest.raises(FileNotFoundError):
            opener("missing/x", os.O_RDONLY, 0, dir_fd)
    finally:
        os.close(dir_fd)


@pytest.mark.parametrize("opener", OPENERS)
def test_a_file_in_the_middle_is_not_a_directory(opener: Opener, tree: Path) -> None:
    with pytest.raises(NotADirectoryError):
        opener(str(tree / "real" / "ssl" / "cert" / "x"), os.O_PATH)


def test_mkdir_nofollow_makes_a_mount_point_once_and_refuses_links(tree: Path) -> None:
    mkdir_nofollow(str(tree / "shared" / "proc"), 0o755)
    mkdir_nofollow(str(tree / "shared" / "proc"), 0o755)  # existing: left as it is
    assert (tree / "shared" / "proc").is_dir()
    for planted in (tree / "shared" / "app", tree / "shared" / "app" / "new"):
        # The link itself (EEXIST from mkdir, then refused) or a link in the parent (the
        # parent's open refuses it): nothing is made at the link's target either way.
        with pytest.raises(OSError) as info:
            mkdir_nofollow(str(planted), 0o755)
        assert info.value.errno == errno.ELOOP
    assert sorted(p.name for p in (tree / "real").iterdir()) == ["ssl"]
    with pytest.raises(OSError) as bad:
        mkdir_nofollow("relative/path", 0o755)
    assert bad.value.errno == errno.EINVAL
