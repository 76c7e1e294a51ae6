"""Equal sections of different units are one object (unit/sharing.py), and only equal ones."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

from supervisor.unit import sharing
from supervisor.unit.loader import UnitLoader
from supervisor.unit.schema import UnitFile
from supervisor.unit.spec import UnitSpec


def spec(name: str, **sections: Any) -> UnitSpec:
    sections.setdefault("service", {"exec": ["/bin/true"]})
    return UnitSpec(name=name, path=f"/x/{name}.toml", unit=UnitFile.model_validate(sections))


def test_equal_sections_of_two_units_are_one_object() -> None:
    a = spec(
        "a",
        resources={"memory_max": "64M"},
        sandbox={"mounts": [{"source": "/srv", "target": "/srv"}]},
    )
    b = spec(
        "b",
        resources={"memory_max": "64M"},
        sandbox={"mounts": [{"source": "/srv", "target": "/srv"}]},
    )
    for section in ("sandbox", "resources", "restart", "oom", "security", "network"):
        assert getattr(a.unit, section) is getattr(b.unit, section), section
    assert a.unit.service is not b.unit.service  # not shared: nearly always differs
    assert a.unit.service == b.unit.service


def test_only_equal_values_are_shared() -> None:
    base = spec("base", resources={"cpu_max": 2.0}, restart={"delay": "100ms"})
    other_value = spec("other", resources={"cpu_max": 2.5})
    assert other_value.unit.resources is not base.unit.resources
    assert other_value.unit.resources.cpu_max == 2.5
    # the keys the file set are part of a section: spelled-out defaults are not shared with
    # left-out ones (nothing reads them today, but a section must be what was parsed)
    spelled = spec("spelled", restart={"delay": "100ms", "policy": "on-failure"})
    assert spelled.unit.restart is not base.unit.restart
    assert spelled.unit.restart.model_fields_set == {"delay", "policy"}


def test_values_equal_across_types_are_told_apart() -> None:
    # 1 == 1.0 == True in Python, and they would hash alike; the spec hash's JSON does not
    assert len({sharing.section_key(v) for v in (1, 1.0, True)}) == 3
    assert sharing.section_key([1]) != sharing.section_key((1,))


def test_a_shared_section_keeps_each_units_hash() -> None:
    alone = UnitSpec(
        name="h",
        path="/x/h.toml",
        unit=UnitFile.model_validate({"service": {"exec": ["/bin/true"]}}),
    )
    again = spec("h")
    assert again.unit.sandbox is alone.unit.sandbox
    assert (again.hash, again.restart_hash) == (alone.hash, alone.restart_hash)
    assert again.to_json() == alone.to_json()


def test_a_section_no_unit_holds_leaves_the_table() -> None:
    gc.collect()
    before = sharing.held_count()
    made = spec("lonely", resources={"memory_max": "123M"})
    assert sharing.held_count() > before
    del made
    gc.collect()
    assert sharing.held_count() == before


def test_units_loaded_from_files_share_their_default_sections(tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / f"{name}.toml").write_text(
            f'[service]\nexec = ["/bin/sleep", "1"]\nenv = {{ NAME = "{name}" }}\n'
        )
        old = os.stat(tmp_path / f"{name}.toml").st_mtime - 10
        os.utime(tmp_path / f"{name}.toml", (old, old))
    specs = UnitLoader(host_checks=False).load_directory(tmp_path).specs
    one, two = specs["one"].unit, specs["two"].unit
    assert one.sandbox is two.sandbox and one.network is two.network
    assert one.service.env == {"NAME": "one"} and two.service.env == {"NAME": "two"}


def test_units_with_the_same_keys_hold_one_set_of_field_names() -> None:
    """The unit's and its [service]'s sets of field names are shared (not the sections): equal
    sets only, and a copy with an update gets a set of its own, the held one unchanged."""
    a = spec("a", service={"exec": ["/bin/a"], "env": {"X": "1"}}, sandbox={"hostname": "a"})
    b = spec("b", service={"exec": ["/bin/b"], "env": {"X": "2"}}, sandbox={"hostname": "b"})
    assert a.unit.model_fields_set is b.unit.model_fields_set
    assert a.unit.service.model_fields_set is b.unit.service.model_fields_set
    assert b.unit.service.model_fields_set == {"exec", "env"}
    other = spec("other", service={"exec": ["/bin/c"], "user": "nobody"})
    assert other.unit.service.model_fields_set == {"exec", "user"}
    copied = a.unit.service.model_copy(update={"workdir": "/srv"})
    assert copied.model_fields_set == {"exec", "env", "workdir"}
    assert b.unit.service.model_fields_set == {"exec", "env"}


def test_a_spec_has_no_instance_dict() -> None:
    """Held per unit for its life: slots, not a __dict__ (unit/spec.py)."""
    assert not hasattr(spec("a"), "__dict__")
