"""User-namespace ranges: the schema key, the daemon's pool, and `assign` (unit/userns.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from supervisor.config import load_config
from supervisor.errors import ConfigError
from supervisor.unit import userns
from supervisor.unit.loader import UnitFileError, parse_unit
from supervisor.unit.schema import UnitFile
from supervisor.unit.spec import UnitSpec
from supervisor.unit.userns import BLOCK, IdRange, Reserved

ALL = ["pid", "mount", "uts", "ipc", "net", "cgroup", "user"]
POOL = IdRange(4 * BLOCK, 6 * BLOCK)  # blocks 4..9


def spec(name: str, **sandbox: Any) -> UnitSpec:
    data = {"service": {"exec": ["/bin/true"]}, "sandbox": sandbox}
    return UnitSpec(name, f"/u/{name}.toml", UnitFile.model_validate(data))


def errors_of(text: str) -> list[str]:
    with pytest.raises(UnitFileError) as info:
        parse_unit("/u/x.toml", "x", text.encode())
    return [f"{e.key}: {e.message}" for e in info.value.errors]


# -- the [sandbox] key --------------------------------------------------------------------


def test_a_user_namespace_picks_unless_told_otherwise() -> None:
    assert userns.wanted(spec("a", namespaces=ALL)) == "pick"
    assert userns.wanted(spec("a", namespaces=ALL, user_namespace="pick")) == "pick"
    assert userns.wanted(spec("a")) == "pick"  # the default since issue 27
    assert userns.wanted(spec("a", user_namespace="host")) is None
    explicit = spec("a", user_namespace={"base": 5 << 20})
    assert userns.wanted(explicit) == IdRange(5 << 20, BLOCK)


def test_the_default_list_has_the_user_namespace_and_host_takes_it_out() -> None:
    assert spec("a").unit.sandbox.namespaces == ALL
    assert spec("a", user_namespace="host").unit.sandbox.namespaces == ALL[:-1]
    for chosen in ("pick", {"base": 5 << 20, "size": 1000}):
        unit = spec("a", user_namespace=chosen).unit
        assert "user" in unit.sandbox.namespaces
    # Also where [network] mode = "host" took "net" out of the defaults.
    for chosen, listed in (("pick", True), (None, True), ("host", False)):
        data = {"service": {"exec": ["/x"]}, "network": {"mode": "host"},
                "sandbox": {"user_namespace": chosen}}  # fmt: skip
        got = UnitFile.model_validate(data).sandbox.namespaces
        assert got == ["pid", "mount", "uts", "ipc", "cgroup"] + ["user"] * listed, chosen


def test_an_explicit_list_without_user_keeps_host_ids() -> None:
    unit = spec("a", namespaces=["pid", "mount", "net"]).unit
    assert unit.sandbox.namespaces == ["pid", "mount", "net"]
    assert userns.wanted(spec("a", namespaces=["pid", "mount", "net"])) is None
    both = spec("a", namespaces=["pid", "mount", "net"], user_namespace="host")
    assert both.unit.sandbox.namespaces == ["pid", "mount", "net"]


def test_contradictions_name_both_keys() -> None:
    head = '[service]\nexec = ["/x"]\n[sandbox]\n'
    found = errors_of(head + 'user_namespace = "host"\nnamespaces = ["pid", "mount", "net", '
                      '"user"]\n')  # fmt: skip
    assert found == ['sandbox.user_namespace: is "host" but sandbox.namespaces lists "user"; '
                     "drop one of them"]  # fmt: skip
    found = errors_of(head + 'user_namespace = "pick"\nnamespaces = ["pid", "mount", "net"]\n')
    assert len(found) == 1 and found[0].startswith(
        "sandbox.user_namespace: asks for a user namespace but sandbox.namespaces does not list"
    )


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ('"mine"', "sandbox.user_namespace"),
        ("{ base = 0 }", "sandbox.user_namespace.base"),
        ("{ base = 100, size = 0 }", "sandbox.user_namespace.size"),
        ("{ base = 4294967200 }", "sandbox.user_namespace.size: base + size - 1 passes"),
        ("{ base = 100, what = 1 }", "sandbox.user_namespace.what"),
    ],
)
def test_bad_values_are_errors_on_the_key(value: str, needle: str) -> None:
    found = errors_of(f'[service]\nexec = ["/x"]\n[sandbox]\nuser_namespace = {value}\n')
    assert any(needle in f for f in found), found


# -- the daemon's pool --------------------------------------------------------------------


def test_the_pool_is_checked(tmp_path: Path) -> None:
    assert userns.parse_pool(userns.DEFAULT_POOL) == IdRange(524288, 1878982656 - 524288 + 1)
    config = tmp_path / "sandboxd.toml"
    cases = [
        ("lots", "is not a range"),
        ("10-5", "must run upwards"),
        ("0-1000000", "must run upwards"),
        ("70000-131071", "no 65536-aligned"),
    ]
    for bad, needle in cases:
        config.write_text(f'userns_pool = "{bad}"\n')
        with pytest.raises(ConfigError) as info:
            load_config(config)
        assert info.value.key == "userns_pool" and needle in info.value.message, info.value


def test_subordinate_ids_are_read_and_skip_what_is_not_an_entry(tmp_path: Path) -> None:
    subuid = tmp_path / "subuid"
    subuid.write_text("# c\nalice:100000:65536\nbroken line\nbob:x:1\nnone:5:0\n\n")
    found = userns.read_subids(str(subuid), str(tmp_path / "missing"))
    assert found == [Reserved(str(subuid), "alice", IdRange(100000, 65536))]
    assert str(found[0]) == f"{subuid} entry of alice (100000-165535)"


def test_pool_blocks_skip_the_ones_a_host_user_has() -> None:
    alice = Reserved("/etc/subuid", "alice", IdRange(5 * BLOCK - 1, 2))  # blocks 4 and 5
    assert userns.pool_blocks(POOL, [alice]) == (4, [alice])


# -- assign -------------------------------------------------------------------------------


def test_picks_are_distinct_aligned_blocks_of_the_pool_outside_subordinate_ids() -> None:
    alice = Reserved("/etc/subuid", "alice", IdRange(4 * BLOCK + 7, 10))
    specs = {n: spec(n, namespaces=ALL) for n in ("a", "b", "c")}
    specs["plain"] = spec("plain", user_namespace="host")
    out = userns.assign(specs, POOL, [alice])
    assert out.ranges == {n: IdRange(b * BLOCK, BLOCK) for n, b in (("a", 5), ("b", 6), ("c", 7))}
    assert out.picks == {"a": 5 * BLOCK, "b": 6 * BLOCK, "c": 7 * BLOCK}
    assert out.new == ["a", "b", "c"] and not out.errors


def test_a_unit_keeps_its_pick_and_a_new_explicit_range_yields_to_it() -> None:
    specs = {
        "a": spec("a", namespaces=ALL),
        "b": spec("b", user_namespace={"base": 9 * BLOCK + 5}),
        "z": spec("z", namespaces=ALL),
    }
    out = userns.assign(specs, POOL, [], picks={"z": 9 * BLOCK, "gone": 4 * BLOCK})
    assert out.ranges == {"a": IdRange(4 * BLOCK, BLOCK), "z": IdRange(9 * BLOCK, BLOCK)}
    assert out.picks == {"a": 4 * BLOCK, "z": 9 * BLOCK}  # "gone" is freed, and reused
    assert out.new == ["a"]
    [error] = out.errors["b"]
    assert error.key == "sandbox.user_namespace" and error.path == "/u/b.toml"
    assert error.message == f'{IdRange(9 * BLOCK + 5, BLOCK)} overlaps the range of unit "z" ' \
        f"({IdRange(9 * BLOCK, BLOCK)})"  # fmt: skip


def test_explicit_ranges_refuse_overlaps_in_name_order_and_subordinate_ids() -> None:
    bob = Reserved("/etc/subgid", "bob", IdRange(100, 10))
    specs = {
        "a": spec("a", user_namespace={"base": 1000, "size": 100}),
        "b": spec("b", user_namespace={"base": 1099, "size": 5}),
        "c": spec("c", user_namespace={"base": 1100, "size": 5}),
        "d": spec("d", user_namespace={"base": 50, "size": 51}),
    }
    out = userns.assign(specs, POOL, [bob])
    assert out.ranges == {"a": IdRange(1000, 100), "c": IdRange(1100, 5)}
    assert out.errors["b"][0].message == '1099-1103 overlaps the range of unit "a" (1000-1099)'
    assert out.errors["d"][0].message == "50-100 overlaps /etc/subgid entry of bob (100-109)"
    assert out.picks == {} and out.new == []


def test_a_held_block_stays_taken_and_an_empty_pool_refuses_the_rest() -> None:
    specs = {n: spec(n, namespaces=ALL) for n in ("a", "b", "c", "d", "e", "f")}
    held = {"invalid-now": IdRange(4 * BLOCK, BLOCK)}
    out = userns.assign(specs, POOL, [], held=held)
    assert "invalid-now" not in out.ranges and "invalid-now" not in out.picks
    assert out.ranges["a"] == IdRange(5 * BLOCK, BLOCK)
    assert sorted(out.ranges) == ["a", "b", "c", "d", "e"]
    assert out.errors["f"][0].message == f"no free block of 65536 ids left in userns_pool {POOL}"


def test_a_unit_that_had_an_explicit_range_keeps_it_against_a_new_one() -> None:
    specs = {
        "a-new": spec("a-new", user_namespace={"base": 1050, "size": 10}),
        "z-old": spec("z-old", user_namespace={"base": 1000, "size": 100}),
    }
    out = userns.assign(specs, POOL, [], before={"z-old": IdRange(1000, 100)})
    assert out.ranges == {"z-old": IdRange(1000, 100)}
    assert (
        out.errors["a-new"][0].message == '1050-1059 overlaps the range of unit "z-old" (1000-1099)'
    )
    # Without a history, name order decides (as `validate` sees a directory).
    assert list(userns.assign(specs, POOL, []).errors) == ["z-old"]


def test_a_pick_a_host_user_now_owns_is_given_up_for_another() -> None:
    carol = Reserved("/etc/subuid", "carol", IdRange(6 * BLOCK, BLOCK))
    out = userns.assign({"a": spec("a", namespaces=ALL)}, POOL, [carol], picks={"a": 6 * BLOCK})
    assert out.ranges == {"a": IdRange(4 * BLOCK, BLOCK)} and out.new == ["a"]
