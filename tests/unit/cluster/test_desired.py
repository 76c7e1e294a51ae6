"""The fleet's desired state as a pure model: keys in, validated units out (cluster/desired.py,
cluster/keys.py), and how the reconciler merges a source with the local units
(engine/sources.py)."""

from __future__ import annotations

from supervisor.cluster import keys
from supervisor.cluster.desired import DesiredState
from supervisor.cluster.gateway import Event, KeyValue, WatchBatch
from supervisor.engine import sources
from supervisor.unit.loader import parse_unit
from supervisor.unit.spec import UnitSpec

P = "/sandboxd/v1"
UNIT = b'[service]\nexec = ["/bin/sleep", "1000"]\n'
UNIT2 = b'[service]\nexec = ["/bin/sleep", "2000"]\n'


def kv(key: str, value: bytes, rev: int) -> KeyValue:
    return KeyValue(key, value, rev)


def put(key: str, value: bytes, rev: int) -> Event:
    return Event(kv(key, value, rev), deleted=False)


def delete(key: str, rev: int) -> Event:
    return Event(kv(key, b"", rev), deleted=True)


def loaded(state: DesiredState) -> tuple[dict[str, UnitSpec], dict[str, list[str]]]:
    got = state.load()
    assert got is not None
    specs, errors = got
    return specs, {n: [str(e) for e in errs] for n, errs in errors.items()}


def test_key_layout() -> None:
    assert keys.node_units("/sandboxd/v1/", "n1") == "/sandboxd/v1/nodes/n1/units/"
    assert keys.status_key(P, "n1", "web") == "/sandboxd/v1/status/n1/web"
    assert keys.alive_key(P, "n1") == "/sandboxd/v1/nodes/n1/alive"
    # From all/units/ to the end of nodes/: status/ (written at every change) is left out.
    assert keys.watched(P) == ("/sandboxd/v1/all/units/", "/sandboxd/v1/nodes0")
    assert keys.unit_of(f"{P}/nodes/n1/units/web", P, "n1") == ("web", True)
    assert keys.unit_of(f"{P}/all/units/web", P, "n1") == ("web", False)
    for other in (f"{P}/nodes/n2/units/web", f"{P}/nodes/n1/alive", f"{P}/status/n1/web",
                  f"{P}/all/units/", f"{P}/all/units/a/b"):  # fmt: skip
        assert keys.unit_of(other, P, "n1") is None


def test_unknown_before_the_first_read() -> None:
    assert DesiredState(P, "n1").load() is None


def test_node_key_wins_over_all_and_other_nodes_are_ignored() -> None:
    state = DesiredState(P, "n1")
    state.reset(10, [
        kv(f"{P}/all/units/web", UNIT, 3), kv(f"{P}/nodes/n1/units/web", UNIT2, 4),
        kv(f"{P}/all/units/db", UNIT, 5), kv(f"{P}/nodes/n2/units/x", UNIT, 6),
    ])  # fmt: skip
    specs, errors = loaded(state)
    assert sorted(specs) == ["db", "web"] and not errors
    assert specs["web"].path == f"etcd:{P}/nodes/n1/units/web"
    assert specs["web"].unit.service.exec == ["/bin/sleep", "2000"]
    assert state.valid_revision == {"db": 5, "web": 4}
    # The node key gone, the all/ one counts again.
    assert state.apply(WatchBatch(11, [delete(f"{P}/nodes/n1/units/web", 11)]))
    specs, _ = loaded(state)
    assert specs["web"].path == f"etcd:{P}/all/units/web" and state.valid_revision["web"] == 3


def test_events_seen_already_are_not_applied_twice() -> None:
    state = DesiredState(P, "n1")
    state.reset(10, [kv(f"{P}/all/units/web", UNIT, 10)])
    # A watch resumed from an earlier revision replays what the read already had.
    assert not state.apply(WatchBatch(12, [delete(f"{P}/all/units/web", 9),
                                           put(f"{P}/all/units/web", UNIT, 10)]))  # fmt: skip
    assert state.apply(WatchBatch(12, [put(f"{P}/all/units/db", UNIT, 12)]))
    assert state.revision == 12
    assert not state.apply(WatchBatch(12, [delete(f"{P}/all/units/db", 12)]))
    assert sorted(loaded(state)[0]) == ["db", "web"]
    # Another node's change moves the revision on, and is no change of ours.
    assert not state.apply(WatchBatch(13, [put(f"{P}/nodes/n2/units/x", UNIT, 13)]))
    assert state.revision == 13
    # A new watch's first answer carries the store's revision, not a promise: the events
    # from the start revision are still to come and must not be skipped.
    assert not state.apply(WatchBatch(30, [], created=True))
    assert state.revision == 13
    assert state.apply(WatchBatch(30, [put(f"{P}/all/units/late", UNIT, 14)]))
    # A progress notice (no events) says every change up to its revision was sent.
    assert not state.apply(WatchBatch(20, []))
    assert state.revision == 20


def test_bad_values_are_refused_naming_the_key() -> None:
    state = DesiredState(P, "n1")
    state.reset(10, [
        kv(f"{P}/all/units/bad", b"[service]\nexec = []\nmemry = 1\n", 3),
        kv(f"{P}/all/units/binary", b"[service]\nexec = ['/bin/\xff']\n", 4),
        kv(f"{P}/all/units/huge", b"#" * (keys.MAX_VALUE + 1), 5),
        kv(f"{P}/all/units/Bad Name", UNIT, 6),
        kv(f"{P}/all/units/empty", b"", 7),
    ])  # fmt: skip
    specs, errors = loaded(state)
    assert not specs
    assert errors["bad"][0].startswith(f"etcd:{P}/all/units/bad:")
    assert any("memry" in e for e in errors["bad"])
    assert "not valid UTF-8" in errors["binary"][0]
    assert "value too large" in errors["huge"][0]
    assert "not a valid unit name" in errors["Bad Name"][0]
    assert "empty" in errors["empty"][0]
    assert state.valid_revision == {}


class Source:
    origin = "etcd:"

    def __init__(self, got: tuple[dict[str, UnitSpec], dict[str, list[object]]] | None) -> None:
        self.got = got
        self.refused_names: list[str] = []

    def load(self) -> tuple[dict[str, UnitSpec], dict[str, list[object]]] | None:
        return self.got

    def refused(self, name: str) -> None:
        self.refused_names.append(name)


def spec(name: str, path: str, text: bytes = UNIT) -> UnitSpec:
    return parse_unit(path, name, text)


def test_merge_local_wins_and_the_clash_is_said() -> None:
    local = {"web": spec("web", "/u/web.toml")}
    remote = {"web": spec("web", "etcd:/k/web", UNIT2), "db": spec("db", "etcd:/k/db")}
    merged, errors, shadowed = sources.merge(Source((remote, {})), local, {}, {})
    assert merged["web"].path == "/u/web.toml" and merged["db"].path == "etcd:/k/db"
    assert shadowed == {"web": "etcd:/k/web is ignored: a local unit has the name web"}
    assert not errors


def test_merge_keeps_a_sources_units_while_it_knows_none() -> None:
    running = {"db": spec("db", "etcd:/k/db"), "web": spec("web", "/u/web.toml"), "x": None}
    merged, _errors, shadowed = sources.merge(Source(None), {}, {}, running)
    assert list(merged) == ["db"] and not shadowed  # a local unit whose file went: not kept


def test_merge_checks_a_sources_after_against_every_unit() -> None:
    after_local = UNIT + b'after = ["web"]\n'
    after_none = UNIT + b'after = ["nothing"]\n'
    remote = {"a": spec("a", "etcd:/k/a", after_local), "b": spec("b", "etcd:/k/b", after_none)}
    source = Source((remote, {}))
    merged, errors, _ = sources.merge(source, {"web": spec("web", "/u/web.toml")}, {}, {})
    assert "a" in merged and "b" not in merged and source.refused_names == ["b"]
    assert "nothing" in str(errors["b"][0])
