"""Property tests: the spec hash survives a write-back, and no input escapes as a traceback."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.unit import tomlout
from supervisor.unit.loader import UnitFileError, UnitLoader, load_unit
from supervisor.unit.schema import CAPABILITIES, UnitFile
from supervisor.unit.spec import UnitSpec

# The deadline is off in tests/conftest.py; HYPOTHESIS_PROFILE=fuzz runs 5000 examples each.
SETTINGS = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- a tiny TOML emitter (the canonical dict only holds str, int, float, bool, list, dict) ------


def _toml_string(text: str) -> str:
    # json.dumps escapes what TOML basic strings need, except DEL, which TOML forbids raw.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(key: str) -> str:
    return (
        key
        if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
        else (_toml_string(key))
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def to_toml(unit: UnitFile) -> str:
    """The unit's canonical form as TOML: one table per section.

    TOML has no null: a None field is left out, which means its default. That is exact for
    every field whose default is None; pids_max (default 1024) spells unlimited "max".
    """
    data = unit.model_dump(mode="json")
    if data["resources"]["pids_max"] is None:
        data["resources"]["pids_max"] = "max"
    out = []
    for section, body in _drop_none(data).items():
        if isinstance(body, list):  # [[listen]]: none generated, an empty list is the default
            assert not body
            continue
        out.append(f"[{section}]")
        out.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in body.items())
        out.append("")
    return "\n".join(out)


# --- strategies for valid units, written the many ways an operator might --------------------

names = st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True)
text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=20)
paths = (
    st.lists(st.from_regex(r"[a-z0-9_.-]{1,8}", fullmatch=True), min_size=1, max_size=3)
    .map(lambda parts: "/" + "/".join(p for p in parts if p not in (".", "..")))
    .filter(lambda p: p != "/")
)


def durations(max_seconds: int = 86400) -> st.SearchStrategy[Any]:
    seconds = st.integers(0, max_seconds)
    return st.one_of(
        seconds,
        seconds.map(lambda s: f"{s}s"),
        seconds.map(lambda s: f"{s * 1000}ms"),
        st.integers(0, max_seconds // 60).map(lambda m: f"{m}m"),
        seconds.map(lambda s: f"{s // 60}m{s % 60}s"),
        st.floats(0, max_seconds, allow_nan=False).map(lambda f: f),
    )


def sizes(min_mib: int = 4) -> st.SearchStrategy[Any]:
    mib = st.integers(min_mib, 4096)
    return st.one_of(
        mib.map(lambda m: f"{m}M"),
        mib.map(lambda m: f"{m * 1024}K"),
        mib.map(lambda m: m << 20),
        mib.map(lambda m: f"{m}MiB"),
    )


service = st.fixed_dictionaries(
    {"exec": st.lists(text, max_size=4).flatmap(lambda rest: paths.map(lambda p: [p, *rest]))},
    optional={
        "env": st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True), text),
        "workdir": paths,
        "user": st.one_of(st.integers(0, 65535), names),
        "stop_signal": st.sampled_from(["SIGTERM", "term", "INT", "SIGHUP", 15]),
        "stop_timeout": durations(),
        "ready": st.sampled_from(["started", "notify"]),
        "watchdog": durations(),
        "autostart": st.booleans(),
    },
)
sandbox = st.fixed_dictionaries(
    {},
    optional={
        "root": st.one_of(st.just("host"), paths),
        "overlay": st.booleans(),
        "hostname": names,
        "init": st.booleans(),
        "read_only": st.booleans(),
        "mounts": st.lists(
            st.one_of(
                st.fixed_dictionaries({"source": paths, "read_only": st.booleans()}),
                st.fixed_dictionaries({"type": st.just("tmpfs"), "size": sizes()}),
            ),
            max_size=3,
        ).flatmap(
            lambda ms: st.lists(paths, min_size=len(ms), max_size=len(ms), unique=True).map(
                lambda ts: [{**m, "target": t} for m, t in zip(ms, ts, strict=True)]
            )
        ),
    },
)
resources = st.fixed_dictionaries(
    {},
    optional={
        "memory_max": st.one_of(st.just("max"), sizes(4096)),
        "swap_max": st.one_of(st.just("max"), sizes(0)),
        "cpu_max": st.floats(0.01, 64),
        "cpu_weight": st.integers(1, 10000),
        "pids_max": st.one_of(st.just("max"), st.integers(1, 100000)),
        "cpus": st.sampled_from(["0", "0-1", "0,2-3", " 1 "]),
    },
)
restart = st.fixed_dictionaries(
    {},
    optional={
        "policy": st.sampled_from(["no", "on-failure", "always"]),
        "delay": durations(60),
        "reset_after": durations(),
        "burst": st.integers(1, 100),
    },
)
security = st.fixed_dictionaries(
    {},
    optional={
        "capabilities": st.lists(
            st.sampled_from(CAPABILITIES).map(
                lambda c: st.sampled_from([c, c.lower(), "CAP_" + c])
            ),
            max_size=5,
        ).flatmap(lambda strategies: st.tuples(*strategies).map(list)),
        "no_new_privileges": st.booleans(),
        "seccomp": st.sampled_from(["default", "unconfined"]),
    },
)
units = st.fixed_dictionaries(
    {"service": service},
    optional={
        "sandbox": sandbox,
        "resources": resources,
        "restart": restart,
        "security": security,
        "oom": st.fixed_dictionaries({"policy": st.sampled_from(["restart", "stop", "continue"])}),
        "health": st.fixed_dictionaries(
            {"tcp": st.integers(1, 65535), "retries": st.integers(1, 9)}
        ),
        "network": st.fixed_dictionaries({"mode": st.sampled_from(["none", "host", "bridge"])}),
    },
)


def _write(directory: str, name: str, content: str | bytes) -> Path:
    path = Path(directory) / f"{name}.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@SETTINGS
@given(data=units, name=names)
def test_a_spec_written_back_reads_back_with_the_same_hash(data: dict[str, Any], name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # The operator's spelling: any key order, human durations and sizes.
        first = load_unit(_write(tmp, name, to_toml_raw(data)))
        canonical = to_toml(first.unit)
        second = load_unit(_write(tmp, name, canonical))
        assert second.hash == first.hash
        assert second.restart_hash == first.restart_hash
        assert to_toml(second.unit) == canonical  # the canonical form is a fixed point
        # The JSON form (state files, the API) validates back to the same spec too.
        again = UnitSpec(
            name, first.path, UnitFile.model_validate(first.unit.model_dump(mode="json"))
        )
        assert again.hash == first.hash


def to_toml_raw(data: dict[str, Any]) -> str:
    """The generated (non-canonical) dict as a TOML file, sections as tables."""
    return "\n".join(
        f"[{section}]\n" + "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in body.items())
        for section, body in data.items()
    )


@SETTINGS
@given(content=st.binary(max_size=512))
def test_random_bytes_only_ever_fail_as_unit_errors(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            load_unit(_write(tmp, "fuzz", content))
        except UnitFileError as exc:
            assert exc.errors and all(str(e).startswith(f"{tmp}/fuzz.toml") for e in exc.errors)


toml_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["10s", "-1s", "max", "64M", "/bin/sh", "SIGTERM", "host", "tmpfs", "nan"]),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
section_keys = st.sampled_from(
    ["exec", "env", "user", "stop_timeout", "after", "root", "mounts", "devices", "namespaces",
     "memory_max", "memory_high", "pids_max", "cpus", "policy", "delay", "capabilities", "mode",
     "address", "tcp", "http", "timeout", "nope"]
)  # fmt: skip


@SETTINGS
@given(
    data=st.dictionaries(
        st.sampled_from(["service", "sandbox", "resources", "restart", "oom", "security",
                         "health", "network", "bogus"]),
        st.dictionaries(section_keys, toml_values, max_size=5),
        max_size=4,
    )
)  # fmt: skip
def test_wrongly_typed_values_only_ever_fail_as_unit_errors(data: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            load_unit(_write(tmp, "fuzz", to_toml_raw(data)))
        except UnitFileError as exc:
            assert exc.errors
            for error in exc.errors:
                assert "\n" not in str(error) or "\n" in error.message  # one line per problem


@SETTINGS
@given(data=units, name=names)
def test_the_effective_toml_of_cat_reads_back_as_the_same_unit(
    data: dict[str, Any], name: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        first = load_unit(_write(tmp, name, to_toml_raw(data)))
        again = load_unit(_write(tmp, name, tomlout.dumps(first.unit.model_dump(mode="json"))))
        assert again.unit == first.unit and again.hash == first.hash


@SETTINGS
@given(template=st.binary(max_size=256), dropin=st.binary(max_size=256), instance=names)
def test_random_templates_and_dropins_only_fail_naming_one_of_their_files(
    template: bytes, dropin: bytes, instance: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _write(tmp, "t@", template)
        _write(tmp, f"t@{instance}", b"")
        (Path(tmp) / "t@.toml.d").mkdir()
        (Path(tmp) / "t@.toml.d" / "a.toml").write_bytes(dropin)
        load = UnitLoader(host_checks=False).load_directory(tmp)
        mine = (f"{tmp}/t@.toml", f"{tmp}/t@.toml.d/a.toml", f"{tmp}/t@{instance}.toml")
        for errors in [*load.errors.values(), *load.template_errors.values()]:
            assert errors and all(str(e).startswith(mine) for e in errors)
            assert all("\n" not in str(e) or "\n" in e.message for e in errors)


@SETTINGS
@given(
    base=st.dictionaries(
        st.sampled_from(["service", "resources", "template", "bogus"]),
        st.dictionaries(section_keys, toml_values, max_size=4),
        max_size=3,
    ),
    over=st.dictionaries(
        st.sampled_from(["service", "resources", "sandbox", "template"]),
        st.dictionaries(section_keys, toml_values, max_size=4),
        max_size=3,
    ),
)
def test_wrongly_typed_templates_and_dropins_only_fail_as_unit_errors(
    base: dict[str, Any], over: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _write(tmp, "t@", to_toml_raw(base))
        _write(tmp, "t@x", b"")
        (Path(tmp) / "t@x.toml.d").mkdir()
        (Path(tmp) / "t@x.toml.d" / "z.toml").write_text(to_toml_raw(over))
        load = UnitLoader(host_checks=False).load_directory(tmp)
        # The instance exists (its file does) whatever the template says: valid or invalid.
        assert ("t@x" in load.specs) != ("t@x" in load.errors)
        assert all(load.errors.values())
