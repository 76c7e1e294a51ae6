"""cpuset lists and the check against the host's online CPUs/nodes (a tmp file stands in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.cgroups import Limits, cpuset
from supervisor.errors import CgroupError


@pytest.mark.parametrize(
    ("text", "ids"),
    [("0", {0}), ("0-1,3", {0, 1, 3}), ("", set()), ("2-4,7,9-10", {2, 3, 4, 7, 9, 10})],
)
def test_parse_and_format_round_trip(text: str, ids: set[int]) -> None:
    assert cpuset.parse_list(text) == ids
    assert cpuset.format_list(ids) == text


@pytest.mark.parametrize("bad", ["a", "3-1", "1-", "-1"])
def test_parse_refuses_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        cpuset.parse_list(bad)


@pytest.fixture
def online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cpus, nodes = tmp_path / "cpu-online", tmp_path / "node-online"
    cpus.write_text("0-1\n")
    nodes.write_text("0\n")
    monkeypatch.setattr(cpuset, "ONLINE_CPUS", str(cpus))
    monkeypatch.setattr(cpuset, "ONLINE_NODES", str(nodes))
    return tmp_path


def test_missing_cpus_are_named_with_what_exists(online: Path) -> None:
    cpuset.check_limits(Limits(cpus="0-1", mems="0"))
    with pytest.raises(CgroupError) as info:
        cpuset.check_limits(Limits(cpus="0-3,8"))
    assert str(info.value) == "cpus '0-3,8': CPUs 2-3,8 not online on this host (online: 0-1)"
    with pytest.raises(CgroupError, match="memory node 1 not online on this host"):
        cpuset.check_limits(Limits(mems="1"))


def test_unreadable_online_file_leaves_it_to_the_kernel(online: Path) -> None:
    (online / "cpu-online").unlink()
    cpuset.check_limits(Limits(cpus="0-63"))
