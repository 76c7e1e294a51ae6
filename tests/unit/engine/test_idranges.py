"""The daemon's user-namespace ranges on disk (engine/idranges.py): picked once, read back by
the next daemon, freed when the unit is gone, and a corrupt file refused."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from supervisor.engine import idranges
from supervisor.engine.idranges import IdRanges
from supervisor.errors import ConfigError
from supervisor.unit import userns
from supervisor.unit.schema import UnitFile
from supervisor.unit.spec import UnitSpec
from supervisor.unit.userns import BLOCK, IdRange, Reserved

POOL = IdRange(2 * BLOCK, 4 * BLOCK)


def spec(name: str, **sandbox: Any) -> UnitSpec:
    data = {"service": {"exec": ["/bin/true"]}, "sandbox": {"user_namespace": "pick", **sandbox}}
    return UnitSpec(name, f"/u/{name}.toml", UnitFile.model_validate(data))


class FilesHeld:
    """The holder as a plain directory (IdRanges.held): a file stands for a held namespace."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.listed = 0

    def names(self) -> list[str]:
        self.listed += 1
        return sorted(p.name for p in self.directory.iterdir())

    def stamp(self) -> tuple[int, int, int]:
        st = self.directory.stat()
        return st.st_mtime_ns, st.st_ctime_ns, st.st_size

    def drop(self, name: str) -> bool:
        (self.directory / name).unlink(missing_ok=True)
        return True

    def destroy(self) -> None:
        for name in self.names():
            self.drop(name)


def on_disk(data_dir: Path) -> dict[str, Any]:
    return dict(json.loads((data_dir / "userns.json").read_text()))


def test_picks_are_written_and_read_back_by_the_next_daemon(tmp_path: Path) -> None:
    ranges = IdRanges(tmp_path, POOL, [])
    assert ranges.assign({"a": spec("a"), "b": spec("b")}, []) == {}
    assert on_disk(tmp_path) == {
        "version": 1, "pool": str(POOL), "picks": {"a": 2 * BLOCK, "b": 3 * BLOCK}
    }  # fmt: skip
    assert (tmp_path / "userns.json").stat().st_mode & 0o777 == 0o600
    again = IdRanges(tmp_path, POOL, [])
    # Known before any reload (a re-adopted run's status), and the same after one.
    assert again.get("b") == IdRange(3 * BLOCK, BLOCK)
    assert again.assign({"b": spec("b"), "a": spec("a")}, []) == {}
    assert (again.get("a"), again.get("b")) == (
        IdRange(2 * BLOCK, BLOCK),
        IdRange(3 * BLOCK, BLOCK),
    )


def test_a_unit_still_known_keeps_its_block_and_a_removed_one_frees_it(tmp_path: Path) -> None:
    ranges = IdRanges(tmp_path, POOL, [])
    ranges.assign({"a": spec("a"), "b": spec("b")}, [])
    # "a" is invalid now (known, no spec): its block is neither freed nor given to "c".
    ranges.assign({"b": spec("b"), "c": spec("c")}, ["a"])
    assert on_disk(tmp_path)["picks"] == {"a": 2 * BLOCK, "b": 3 * BLOCK, "c": 4 * BLOCK}
    assert ranges.get("a") == IdRange(2 * BLOCK, BLOCK)
    # Gone: the next unit to pick gets it.
    ranges.assign({"b": spec("b"), "c": spec("c"), "d": spec("d")}, [])
    assert on_disk(tmp_path)["picks"] == {"b": 3 * BLOCK, "c": 4 * BLOCK, "d": 2 * BLOCK}
    assert ranges.get("a") is None


def test_refused_units_are_returned_with_their_errors(tmp_path: Path) -> None:
    alice = Reserved("/etc/subuid", "alice", IdRange(5 * BLOCK, BLOCK))
    ranges = IdRanges(tmp_path, POOL, [alice])
    found = ranges.assign({n: spec(n) for n in "abcd"}, [])
    assert list(found) == ["d"] and found["d"][0].key == "sandbox.user_namespace"
    assert ranges.get("d") is None


def test_a_corrupt_file_is_refused_rather_than_guessed(tmp_path: Path) -> None:
    (tmp_path / "userns.json").write_text('{"version": 1, "picks": {"a": "many"}}')
    (tmp_path / "userns.json").chmod(0o600)
    with pytest.raises(ConfigError) as info:
        IdRanges(tmp_path, POOL, [])
    assert "corrupt" in str(info.value) and "userns.json" in str(info.value)


def test_an_explicit_range_of_an_invalid_unit_stays_taken(tmp_path: Path) -> None:
    ranges = IdRanges(tmp_path, POOL, [])
    assert ranges.assign({"x": spec("x", user_namespace={"base": 9 * BLOCK})}, []) == {}
    assert not (tmp_path / "userns.json").exists()  # explicit ranges are the file's to say
    # "x" is invalid now and may still run its last version: "y" cannot have its ids.
    found = ranges.assign({"y": spec("y", user_namespace={"base": 9 * BLOCK + 1})}, ["x"])
    assert 'overlaps the range of unit "x"' in found["y"][0].message
    assert ranges.get("x") == IdRange(9 * BLOCK, BLOCK) and ranges.get("y") is None


def test_a_held_namespace_goes_with_its_range_and_is_never_handed_to_another_unit(
    tmp_path: Path,
) -> None:
    # Plain files stand for the held namespaces (linux/helduserns.py; held ones in
    # tests/integration/test_userns_held.py).
    held = tmp_path / "held"
    held.mkdir()
    ranges = IdRanges(tmp_path, POOL, [], FilesHeld(held))
    ranges.assign({"a": spec("a"), "b": spec("b")}, [])
    for base in (2, 3):
        (held / f"{base * BLOCK}-{BLOCK}").touch()  # what the launches of a and b held
    (held / "stray").touch()  # no range's: the directory is the daemon's, it goes too
    ranges.assign({"b": spec("b")}, [])  # a removed: its block is free, its namespace goes
    assert sorted(p.name for p in held.iterdir()) == [f"{3 * BLOCK}-{BLOCK}"]
    (held / f"{2 * BLOCK}-{BLOCK}").touch()  # as if a launch of a raced the reload
    # c picks a's old block in the next reload: it never joins a namespace held for a.
    ranges.assign({"b": spec("b"), "c": spec("c")}, [])
    assert ranges.get("c") == IdRange(2 * BLOCK, BLOCK)
    assert sorted(p.name for p in held.iterdir()) == [f"{3 * BLOCK}-{BLOCK}"]
    # A new daemon keeps the namespaces of the ranges it reads back, none other.
    (held / f"{5 * BLOCK}-{BLOCK}").touch()
    IdRanges(tmp_path, POOL, [], FilesHeld(held))
    assert sorted(p.name for p in held.iterdir()) == [f"{3 * BLOCK}-{BLOCK}"]


def test_a_released_unit_gives_its_block_and_its_namespace_back_at_once(tmp_path: Path) -> None:
    held = tmp_path / "held"
    held.mkdir()
    ranges = IdRanges(tmp_path, POOL, [], FilesHeld(held))
    ranges.assign({"a": spec("a"), "b": spec("b")}, [])
    for base in (2, 3):
        (held / f"{base * BLOCK}-{BLOCK}").touch()
    # "a" was removed while its run still stopped (known: it kept its block); it has ended.
    ranges.assign({"b": spec("b")}, ["a"])
    assert ranges.get("a") == IdRange(2 * BLOCK, BLOCK)
    ranges.release("a")
    assert ranges.get("a") is None and ranges.get("b") == IdRange(3 * BLOCK, BLOCK)
    assert on_disk(tmp_path)["picks"] == {"b": 3 * BLOCK}
    assert sorted(p.name for p in held.iterdir()) == [f"{3 * BLOCK}-{BLOCK}"]
    ranges.release("a")  # twice, or a unit that never had one: nothing
    ranges.release("nobody")
    assert on_disk(tmp_path)["picks"] == {"b": 3 * BLOCK}
    ranges.drop_held()  # the daemon exits with its sandboxes stopped: none is left
    assert list(held.iterdir()) == []


def test_a_reload_that_changes_no_want_decides_nothing_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 5000-unit reload with one edited file (issue 23): the decision is not made again
    while what every unit wants, the units kept and the ranges it began from are the same."""
    decided: list[int] = []
    real = userns.assign
    monkeypatch.setattr(userns, "assign", lambda *a, **k: decided.append(1) or real(*a, **k))
    ranges = IdRanges(tmp_path, POOL, [])
    specs = {"a": spec("a"), "b": spec("b")}
    ranges.assign(specs, [])
    ranges.assign(specs, [])  # the answer is what it began from: from now on, no decision
    assert len(decided) == 2
    edited = {**specs, "b": spec("b", hostname="other")}  # a new spec, the same want
    assert ranges.assign(edited, []) == {} and len(decided) == 2
    assert ranges.get("b") == IdRange(3 * BLOCK, BLOCK)
    ranges.assign(edited, ["gone"])  # another set of kept units: decided again
    explicit = {**edited, "b": spec("b", user_namespace={"base": 9 * BLOCK})}
    ranges.assign(explicit, ["gone"])  # another want
    assert len(decided) == 4 and ranges.get("b") == IdRange(9 * BLOCK, BLOCK)


def test_every_answer_is_the_one_a_fresh_decision_gives(tmp_path: Path) -> None:
    """A sequence of reloads (a refused unit, an invalid one, an explicit range, removals):
    each answer, and every unit's range after it, as a decision made from scratch gives."""
    alice = Reserved("/etc/subuid", "alice", IdRange(5 * BLOCK, BLOCK))
    (tmp_path / "kept").mkdir()
    (tmp_path / "fresh").mkdir()
    kept = IdRanges(tmp_path / "kept", POOL, [alice])
    fresh = IdRanges(tmp_path / "fresh", POOL, [alice])
    full = {n: spec(n) for n in "abcd"}  # three blocks for four units: "d" is refused
    steps: list[tuple[dict[str, UnitSpec], list[str]]] = [
        (full, []),
        (full, []),
        (full, []),
        ({n: s for n, s in full.items() if n != "a"}, ["a"]),  # "a" invalid: keeps its block
        ({n: s for n, s in full.items() if n != "a"}, ["a"]),
        ({n: s for n, s in full.items() if n != "a"}, []),  # "a" gone: "d" gets its block
        ({n: s for n, s in full.items() if n != "a"}, []),
        ({"b": spec("b", user_namespace={"base": 3 * BLOCK}), "c": full["c"]}, []),
        ({"b": spec("b", user_namespace={"base": 3 * BLOCK}), "c": full["c"]}, []),
        (full, []),
        (full, []),
    ]
    names = "abcd"
    for specs, known in steps:
        fresh._last = None  # the reference decides at every call
        want = fresh.assign(specs, known)
        got = kept.assign(specs, known)
        assert {n: [str(e) for e in es] for n, es in got.items()} == {
            n: [str(e) for e in es] for n, es in want.items()
        }
        assert [kept.get(n) for n in names] == [fresh.get(n) for n in names]


def test_a_namespace_held_for_no_range_goes_even_when_nothing_is_decided(
    tmp_path: Path,
) -> None:
    held = tmp_path / "held"
    held.mkdir()
    ranges = IdRanges(tmp_path, POOL, [], FilesHeld(held))
    specs = {"a": spec("a")}
    ranges.assign(specs, [])
    ranges.assign(specs, [])
    (held / f"{2 * BLOCK}-{BLOCK}").touch()  # a's
    (held / f"{4 * BLOCK}-{BLOCK}").touch()  # a launch that raced its unit's release
    ranges.assign(specs, [])
    assert sorted(p.name for p in held.iterdir()) == [f"{2 * BLOCK}-{BLOCK}"]


def test_an_unchanged_holder_is_not_listed_again_and_a_file_made_there_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reload's shortcut lists the holder only when its directory's stamp moved since a
    listing left nothing but the units' ranges there: a launch that raced its unit's release
    makes a file, which moves it, and that file still goes at the next reload."""
    held = tmp_path / "held"
    held.mkdir()
    files = FilesHeld(held)
    ranges = IdRanges(tmp_path, POOL, [], files)
    real = time.time_ns  # the stamps are past the racy window (a few s) without waiting
    monkeypatch.setattr(idranges.time, "time_ns", lambda: real() + 10_000_000_000)
    specs = {"a": spec("a")}
    ranges.assign(specs, [])
    (held / f"{2 * BLOCK}-{BLOCK}").touch()  # a's, made by its launch
    ranges.assign(specs, [])
    listed = files.listed
    ranges.assign(specs, [])
    ranges.assign(specs, [])
    assert files.listed == listed  # nothing changed there: no listing
    stray = held / f"{4 * BLOCK}-{BLOCK}"
    stray.touch()  # a launch that raced its unit's release
    ranges.assign(specs, [])
    assert files.listed == listed + 1
    assert sorted(p.name for p in held.iterdir()) == [f"{2 * BLOCK}-{BLOCK}"]


def test_a_holder_changed_within_the_racy_window_is_listed_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stamp younger than the racy window is not trusted: a file made in the same tick as
    the listing, after it, would not move it."""
    held = tmp_path / "held"
    held.mkdir()
    files = FilesHeld(held)
    ranges = IdRanges(tmp_path, POOL, [], files)
    real = time.time_ns  # every change is "just now" to the ranges
    monkeypatch.setattr(idranges.time, "time_ns", lambda: real() - 10_000_000_000)
    specs = {"a": spec("a")}
    ranges.assign(specs, [])
    (held / f"{2 * BLOCK}-{BLOCK}").touch()
    listed = files.listed
    ranges.assign(specs, [])
    ranges.assign(specs, [])
    assert files.listed == listed + 2
