"""The daemon's loader skips the lstat of files its inotify watch saw no change to
(linux/dirwatch.py, unit/loader.py): every way a unit file can change is still seen by the
next load, on the real kernel's inotify.

Each edit below keeps the file's size and puts its mtime back, so mtime, size and inode alone
would call it unchanged: the watch tells without a stat (and the signature's ctime would too).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import supervisor.unit.loader as loader_module
from supervisor.linux import inotify
from supervisor.linux.dirwatch import DirectoryWatch
from supervisor.unit.loader import UnitLoader
from tests.support.daemon_kit import Daemon
from tests.support.requires import requires_root

OLD = 1_600_000_000  # an mtime long past: the entry is trusted by its signature at once


def unit(argv: str) -> str:
    return f'[service]\nexec = ["/bin/sleep", "{argv}"]\n'


def write(path: Path, text: str, mtime: int = OLD) -> None:
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def exec_of(loader: UnitLoader, directory: Path, name: str) -> list[str]:
    return list(loader.load_directory(directory).specs[name].unit.service.exec)


@pytest.fixture
def loader() -> Iterator[UnitLoader]:
    made = UnitLoader(host_checks=False, watch=True)
    yield made
    made.close()


@pytest.fixture
def units(tmp_path: Path) -> Path:
    directory = tmp_path / "units"
    directory.mkdir()
    for name in ("a", "b", "c"):
        write(directory / f"{name}.toml", unit("100"))
    return directory


def test_an_in_place_edit_keeping_mtime_and_size_is_seen(loader: UnitLoader, units: Path) -> None:
    assert exec_of(loader, units, "a") == ["/bin/sleep", "100"]
    assert exec_of(loader, units, "a") == ["/bin/sleep", "100"]  # now taken from the watch
    with open(units / "a.toml", "r+") as f:  # same size, same inode
        f.write(unit("200"))
    os.utime(units / "a.toml", (OLD, OLD))
    assert exec_of(loader, units, "a") == ["/bin/sleep", "200"]


def test_without_the_watch_the_signature_sees_that_edit_by_its_ctime(units: Path) -> None:
    """The same edit, no watch: mtime and size are kept, but the utime that put mtime back
    moved the ctime, which the signature holds (unit/loader.py)."""
    plain = UnitLoader(host_checks=False)
    assert exec_of(plain, units, "a") == ["/bin/sleep", "100"]
    with open(units / "a.toml", "r+") as f:
        f.write(unit("200"))
    os.utime(units / "a.toml", (OLD, OLD))
    assert exec_of(plain, units, "a") == ["/bin/sleep", "200"]


def test_create_delete_and_rename_into_the_directory_are_seen(
    loader: UnitLoader, units: Path, tmp_path: Path
) -> None:
    loader.load_directory(units)
    loader.load_directory(units)
    write(units / "d.toml", unit("100"))
    (units / "c.toml").unlink()
    elsewhere = tmp_path / "b.new"
    write(elsewhere, unit("300"))
    elsewhere.rename(units / "b.toml")  # an editor's or a deploy tool's atomic replace
    loaded = loader.load_directory(units)
    assert sorted(loaded.specs) == ["a", "b", "d"]
    assert list(loaded.specs["b"].unit.service.exec) == ["/bin/sleep", "300"]


def test_an_edit_through_a_hard_link_elsewhere_is_seen(
    loader: UnitLoader, units: Path, tmp_path: Path
) -> None:
    """The directory's watch sees only what is done through its own entries; the file's own
    watch sees the rest."""
    other = tmp_path / "elsewhere"
    other.mkdir()
    os.link(units / "a.toml", other / "a.toml")
    loader.load_directory(units)
    loader.load_directory(units)
    with open(other / "a.toml", "r+") as f:
        f.write(unit("400"))
    os.utime(other / "a.toml", (OLD, OLD))
    assert exec_of(loader, units, "a") == ["/bin/sleep", "400"]


def test_a_dropin_directory_appearing_is_seen(loader: UnitLoader, units: Path) -> None:
    loader.load_directory(units)
    loader.load_directory(units)
    dropins = units / "a.toml.d"
    dropins.mkdir()
    (dropins / "10-exec.toml").write_text(unit("500"))
    assert exec_of(loader, units, "a") == ["/bin/sleep", "500"]
    (dropins / "10-exec.toml").write_text(unit("600"))  # and a drop-in's own edit
    assert exec_of(loader, units, "a") == ["/bin/sleep", "600"]


def overflow_queue(noise: Path) -> None:
    """More events on `noise` (a new file) than the kernel queues for a watch of its directory
    (fs.inotify.max_queued_events): those past the limit are lost, IN_Q_OVERFLOW says so.
    Writes and utimes alternate, so the kernel cannot merge them into fewer events."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    with open(noise, "w") as f:
        for i in range(limit // 2 + 10):
            f.write("x")
            f.flush()
            os.utime(noise, (i, i))


def test_lost_events_make_the_next_load_look_at_every_file(loader: UnitLoader, units: Path) -> None:
    """Past the kernel's queue (fs.inotify.max_queued_events) the events are lost and
    IN_Q_OVERFLOW says so: the next load checks every file's signature, as at start."""
    loader.load_directory(units)
    loader.load_directory(units)
    overflow_queue(units / "noise.txt")  # not a unit
    write(units / "b.toml", unit("700000"), mtime=OLD + 1)  # its signature changes
    assert exec_of(loader, units, "b") == ["/bin/sleep", "700000"]


def test_overflow_is_reported_as_unknown(tmp_path: Path) -> None:
    watch = DirectoryWatch(str(tmp_path))
    try:
        overflow_queue(tmp_path / "noise")
        assert watch.changes() is None
        assert not watch.broken  # the watch itself goes on
        (tmp_path / "after").write_text("")
        assert watch.changes() == {"after"}
    finally:
        watch.close()


def test_a_directory_swapped_in_under_the_path_is_seen(
    loader: UnitLoader, units: Path, tmp_path: Path
) -> None:
    loader.load_directory(units)
    loader.load_directory(units)
    new = tmp_path / "new"
    new.mkdir()
    write(new / "a.toml", unit("800"))
    units.rename(tmp_path / "old")
    new.rename(units)
    loaded = loader.load_directory(units)
    assert sorted(loaded.specs) == ["a"]
    assert list(loaded.specs["a"].unit.service.exec) == ["/bin/sleep", "800"]
    with open(units / "a.toml", "r+") as f:  # and the new directory is watched in turn
        f.write(unit("900"))
    os.utime(units / "a.toml", (OLD, OLD))
    assert exec_of(loader, units, "a") == ["/bin/sleep", "900"]


def test_unchanged_files_are_not_even_stat_ed(
    loader: UnitLoader, units: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loader.load_directory(units)
    looked: list[str] = []
    real = os.lstat

    def counting(path: str, *args: object, **kwargs: object) -> os.stat_result:
        looked.append(str(path))
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "lstat", counting)
    loader.load_directory(units)
    assert looked == []
    write(units / "b.toml", unit("111"))  # the changed file is read, the others not looked at
    assert exec_of(loader, units, "b") == ["/bin/sleep", "111"]
    assert looked == []


def loaded_thrice(loader: UnitLoader, directory: Path) -> None:
    """The first load makes the watch, the second keeps the plain files (unit/plainkept.py):
    the third and later take them as they were without a look."""
    for _ in range(3):
        loader.load_directory(directory)


def test_kept_plain_units_are_not_looked_at_and_keep_their_objects(
    loader: UnitLoader, units: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load after one edit looks at the edited file alone: no composition check, no cache
    lookup for the others, whose spec objects (and so every per-spec value) stay the same."""
    loaded_thrice(loader, units)
    before = loader.load_directory(units)
    looked: list[str] = []
    real = loader_module.composition_of

    def counting(directory: str, name: str, *args: object) -> object:
        looked.append(name)
        return real(directory, name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(loader_module, "composition_of", counting)
    write(units / "b.toml", unit("222"))
    after = loader.load_directory(units)
    assert looked == ["b"]
    assert after.specs["a"] is before.specs["a"] and after.specs["c"] is before.specs["c"]
    assert list(after.specs["b"].unit.service.exec) == ["/bin/sleep", "222"]
    assert loader.load_directory(units).specs.keys() == {"a", "b", "c"}


def test_a_kept_invalid_unit_stays_invalid_with_its_error(loader: UnitLoader, units: Path) -> None:
    write(units / "bad.toml", "[service]\nexec = []\n")
    loaded_thrice(loader, units)
    again = loader.load_directory(units)
    assert "bad" not in again.specs and "service.exec" in str(again.errors["bad"][0])
    write(units / "bad.toml", unit("5"))  # fixed
    assert exec_of(loader, units, "bad") == ["/bin/sleep", "5"]


def test_a_dropin_added_to_an_empty_dropin_directory_is_seen(
    loader: UnitLoader, units: Path
) -> None:
    """The directory's watch does not see into `a.toml.d`: a unit with one, even empty, is
    never kept, so the drop-in written there later is merged at the next load."""
    (units / "a.toml.d").mkdir()
    loaded_thrice(loader, units)
    (units / "a.toml.d" / "10-exec.toml").write_text(unit("321"))
    assert exec_of(loader, units, "a") == ["/bin/sleep", "321"]


def test_a_kept_unit_removed_and_readded_is_seen(loader: UnitLoader, units: Path) -> None:
    loaded_thrice(loader, units)
    (units / "c.toml").unlink()
    assert sorted(loader.load_directory(units).specs) == ["a", "b"]
    write(units / "c.toml", unit("77"))
    assert exec_of(loader, units, "c") == ["/bin/sleep", "77"]


def test_a_template_edit_reaches_its_instances_beside_kept_units(
    loader: UnitLoader, units: Path
) -> None:
    template = '[template]\ninstances = ["1"]\n[service]\nexec = ["/bin/sleep", "%i{n}"]\n'
    write(units / "t@.toml", template.format(n=0))
    loaded_thrice(loader, units)
    assert exec_of(loader, units, "t@1") == ["/bin/sleep", "10"]
    write(units / "t@.toml", template.format(n=9))
    assert exec_of(loader, units, "t@1") == ["/bin/sleep", "19"]


def test_after_lost_events_nothing_is_kept(loader: UnitLoader, units: Path) -> None:
    """An edit the watch lost (IN_Q_OVERFLOW) is found by the signature: the kept outcomes
    are dropped with the watch's knowledge."""
    loaded_thrice(loader, units)
    overflow_queue(units / "noise.txt")
    write(units / "a.toml", unit("424242"), mtime=OLD + 1)
    assert exec_of(loader, units, "a") == ["/bin/sleep", "424242"]


@pytest.mark.root
@requires_root
def test_the_daemon_restarts_a_unit_edited_in_place_keeping_mtime_and_size(
    daemon: Daemon,
) -> None:
    """The daemon's own loader watches its directory: `reload` after an edit that the stat
    signature alone would miss restarts the unit, and leaves the other unit alone."""
    text = '[service]\nexec = ["/bin/sleep", "1000"]\nstop_timeout = "300ms"\n'
    for name in ("edit", "keep"):
        write(daemon.units / f"{name}.toml", text)
    daemon.start()
    before = daemon.wait_unit("edit", lambda u: u["state"] == "running")
    daemon.wait_unit("keep", lambda u: u["state"] == "running")
    code, body = daemon.request("POST", "/v1/reload")  # a reload from the watch alone
    assert code == 200 and body["restarted"] == [] and sorted(body["unchanged"]) == ["edit", "keep"]
    with open(daemon.units / "edit.toml", "r+") as f:
        f.write(text.replace("1000", "2000"))
    os.utime(daemon.units / "edit.toml", (OLD, OLD))
    code, body = daemon.request("POST", "/v1/reload")
    assert code == 200 and body["restarted"] == ["edit"] and body["unchanged"] == ["keep"]
    daemon.wait_unit("edit", lambda u: u["state"] == "running" and u["pid"] != before["pid"])


def test_past_the_watch_limit_every_file_is_checked_by_its_signature(
    units: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file watch refused (ENOSPC: fs.inotify.max_user_watches, shared by all of root's
    processes) leaves its file to the stat signature, and is asked for once per load."""
    real = inotify.add_watch
    asked: list[str] = []

    def refuse_files(fd: int, path: str, mask: int) -> int:
        if path == str(units):
            return real(fd, path, mask)
        asked.append(path)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(inotify, "add_watch", refuse_files)
    loader = UnitLoader(host_checks=False, watch=True)
    try:
        assert exec_of(loader, units, "a") == ["/bin/sleep", "100"]
        assert len(asked) == 1
        write(units / "a.toml", unit("12345"), mtime=OLD + 1)  # its signature changes
        assert exec_of(loader, units, "a") == ["/bin/sleep", "12345"]
        assert len(asked) == 2
    finally:
        loader.close()
