"""Templates, instances, specifiers and drop-ins (issue 24), loaded as the daemon loads them.

The corpus at the end is the hidden-input discipline for composed units: every bad template,
instance file or drop-in is refused with one `FILE[:LINE]: KEY: message` line naming the file
the user must edit, and never stops the other units from loading.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor.unit.instances import unit_names
from supervisor.unit.loader import UnitFileError, UnitLoader, load_unit

TEMPLATE = """\
[template]
instances = ["8081"]

[service]
exec = ["/bin/echo", "%i", "%n", "%p", "100%%"]
env = { PORT = "%i" }

[resources]
memory_max = "64M"
"""


def load(directory: Path):  # type: ignore[no-untyped-def]
    return UnitLoader(host_checks=False).load_directory(directory)


def write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_instances_come_from_empty_files_symlinks_and_the_list(tmp_path: Path) -> None:
    write(tmp_path / "web@.toml", TEMPLATE)
    write(tmp_path / "web@8080.toml")
    (tmp_path / "web@9090.toml").symlink_to("web@.toml")
    result = load(tmp_path)
    assert result.errors == {}
    assert sorted(result.specs) == ["web@8080", "web@8081", "web@9090"]
    spec = result.specs["web@8080"]
    assert spec.unit.service.exec == ["/bin/echo", "8080", "web@8080", "web", "100%"]
    assert spec.unit.service.env == {"PORT": "8080"}
    assert spec.template == str(tmp_path / "web@.toml")
    assert result.sources["web@8080"] == [str(tmp_path / "web@8080.toml"), spec.template]
    # Each instance is its own unit with its own hash; the template alone is none.
    assert len({s.hash for s in result.specs.values()}) == 3
    assert "web@" not in result.specs and "web@" not in result.errors


def test_editing_the_template_changes_only_the_instances_it_changes(tmp_path: Path) -> None:
    write(tmp_path / "web@.toml", TEMPLATE)
    write(tmp_path / "web@8080.toml")
    loader = UnitLoader(host_checks=False)
    before = loader.load_directory(tmp_path).specs
    # A drop-in of one instance pins its memory; the template's memory_max changes after.
    write(tmp_path / "web@8080.toml.d" / "mem.toml", '[resources]\nmemory_max = "64M"\n')
    write(tmp_path / "web@.toml", TEMPLATE.replace('"64M"', '"128M"'))
    after = loader.load_directory(tmp_path).specs
    assert after["web@8080"].hash == before["web@8080"].hash
    assert after["web@8081"].hash != before["web@8081"].hash


def test_dropins_merge_table_by_table_in_lexical_order_and_arrays_replace(tmp_path: Path) -> None:
    write(
        tmp_path / "app.toml",
        '[service]\nexec = ["/bin/sleep", "1"]\nenv = { A = "1", B = "1" }\n'
        '[resources]\nmemory_max = "64M"\npids_max = 10\n',
    )
    write(tmp_path / "app.toml.d" / "20-b.toml", '[resources]\nmemory_max = "16M"\n')
    write(
        tmp_path / "app.toml.d" / "10-a.toml",
        '[resources]\nmemory_max = "32M"\n[service]\nexec = ["/bin/true"]\nenv = { B = "2" }\n',
    )
    write(tmp_path / "app.toml.d" / ".hidden.toml", "not toml")
    write(tmp_path / "app.toml.d" / "notes.txt", "not a drop-in")
    spec = load(tmp_path).specs["app"]
    assert spec.unit.resources.memory_max == 16 << 20  # 20-b.toml is merged last
    assert spec.unit.resources.pids_max == 10  # a key no drop-in sets stays
    assert spec.unit.service.exec == ["/bin/true"]  # replaced, not appended to
    assert spec.unit.service.env == {"A": "1", "B": "2"}  # tables merge key by key
    assert [os.path.basename(d) for d in spec.dropins] == ["10-a.toml", "20-b.toml"]
    assert spec.template is None


def test_an_instance_dropin_overrides_the_templates_of_the_same_name(tmp_path: Path) -> None:
    write(tmp_path / "web@.toml", TEMPLATE)
    write(tmp_path / "web@8080.toml")
    write(tmp_path / "web@.toml.d" / "mem.toml", '[resources]\nmemory_max = "32M"\n')
    write(tmp_path / "web@.toml.d" / "pids.toml", "[resources]\npids_max = 7\n")
    write(tmp_path / "web@8080.toml.d" / "mem.toml", '[resources]\nmemory_max = "8M"\n')
    specs = load(tmp_path).specs
    assert specs["web@8080"].unit.resources.memory_max == 8 << 20
    assert specs["web@8080"].unit.resources.pids_max == 7
    assert specs["web@8081"].unit.resources.memory_max == 32 << 20


def test_specifiers_are_not_expanded_in_keys_nor_in_plain_units(tmp_path: Path) -> None:
    write(tmp_path / "t@.toml", '[service]\nexec = ["/bin/true"]\nenv = { "K%i" = "%i" }\n')
    write(tmp_path / "t@x.toml")
    write(tmp_path / "plain.toml", '[service]\nexec = ["/bin/date", "+%s"]\n')
    specs = load(tmp_path).specs
    assert specs["t@x"].unit.service.env == {"K%i": "x"}
    assert specs["plain"].unit.service.exec == ["/bin/date", "+%s"]


def test_a_broken_template_keeps_its_listed_instances_known(tmp_path: Path) -> None:
    # Otherwise they would vanish from the load and the daemon would stop them.
    write(tmp_path / "web@.toml", TEMPLATE)
    loader = UnitLoader(host_checks=False)
    assert list(loader.load_directory(tmp_path).specs) == ["web@8081"]
    write(tmp_path / "web@.toml", TEMPLATE + "[broken\n")
    result = loader.load_directory(tmp_path)
    assert list(result.errors) == ["web@8081"]
    assert "web@.toml:10:8: syntax: invalid TOML" in str(result.errors["web@8081"][0])


def test_load_unit_of_an_instance_file_composes_it(tmp_path: Path) -> None:
    write(tmp_path / "web@.toml", TEMPLATE)
    spec = load_unit(write(tmp_path / "web@8080.toml"))
    assert spec.unit.service.env == {"PORT": "8080"}
    with pytest.raises(UnitFileError, match="a template is never run by itself"):
        load_unit(tmp_path / "web@.toml")


def test_an_absolute_link_to_its_own_template_is_an_instance(tmp_path: Path) -> None:
    write(tmp_path / "web@.toml", OK_TEMPLATE)
    (tmp_path / "web@abs.toml").symlink_to(tmp_path / "web@.toml")
    (tmp_path / "web@dot.toml").symlink_to("./web@.toml")
    result = load(tmp_path)
    assert result.errors == {}
    assert sorted(result.specs) == ["web@abs", "web@dot"]


def test_a_plain_unit_file_may_not_be_a_symlink(tmp_path: Path) -> None:
    write(tmp_path / "real" / "x.toml", '[service]\nexec = ["/bin/true"]\n')
    (tmp_path / "x.toml").symlink_to(tmp_path / "real" / "x.toml")
    [error] = load(tmp_path).errors["x"]
    assert str(error) == f"{tmp_path}/x.toml: file: " + (
        "is a symlink: unit files and drop-ins are not followed through symlinks, except an "
        "instance's link to its own template in the same directory (web@8080.toml -> web@.toml)"
    )


OK_TEMPLATE = '[service]\nexec = ["/bin/echo", "%i"]\n'

# (files to write: relative path -> text, or "->target" for a symlink), the unit whose errors
# are checked, and the one error line expected, relative to the directory.
CORPUS = {
    "unknown-specifier": (
        {"t@.toml": '[service]\nexec = ["/bin/echo", "%x"]\n', "t@1.toml": ""},
        "t@1",
        "t@.toml:2: service.exec[1]: unknown specifier '%x': use %i (the instance), %n (the unit"
        " name), %p (the template's prefix), or %% for a literal %",
    ),
    "lone-percent": (
        {"t@.toml": '[service]\nexec = ["/bin/echo", "50%"]\n', "t@1.toml": ""},
        "t@1",
        "t@.toml:2: service.exec[1]: a lone '%' ends the value: write %% for a literal %; known: "
        "%i (the instance), %n (the unit name), %p (the template's prefix)",
    ),
    "specifier-in-dropin": (
        {
            "t@.toml": OK_TEMPLATE,
            "t@1.toml": "",
            "t@.toml.d/env.toml": '[service.env]\nX = "%z"\n',
        },
        "t@1",
        "t@.toml.d/env.toml:2: service.env.X: unknown specifier '%z': use %i (the instance), %n "
        "(the unit name), %p (the template's prefix), or %% for a literal %",
    ),
    "bad-listed-instance": (
        {"t@.toml": '[template]\ninstances = ["a b"]\n' + OK_TEMPLATE},
        "t@.toml",
        "t@.toml:2: template.instances[0]: 'a b' is not a valid instance name: use letters, "
        "digits, '_', '.' or '-' (no '/', '@', spaces or control characters), t@INSTANCE at most"
        " 63 characters",
    ),
    "listed-instance-too-long": (
        {"t@.toml": f'[template]\ninstances = ["{"x" * 62}"]\n' + OK_TEMPLATE},
        "t@.toml",
        None,
    ),
    "instances-not-an-array": (
        {"t@.toml": '[template]\ninstances = "8080"\n' + OK_TEMPLATE},
        "t@.toml",
        "t@.toml:2: template.instances: must be an array of strings",
    ),
    "instance-not-a-string": (
        {"t@.toml": "[template]\ninstances = [8080]\n" + OK_TEMPLATE},
        "t@.toml",
        't@.toml:2: template.instances[0]: an instance is a string, such as "8080"',
    ),
    "unknown-template-key": (
        {"t@.toml": '[template]\ninstance = ["1"]\n' + OK_TEMPLATE},
        "t@.toml",
        't@.toml:2: template.instance: unknown key (the [template] section has only "instances")',
    ),
    "template-section-in-a-plain-unit": (
        {"p.toml": '[template]\ninstances = ["1"]\n' + OK_TEMPLATE},
        "p",
        "p.toml:1: template: only a template (NAME@.toml) or its drop-ins may have a [template]"
        " section",
    ),
    "symlink-to-another-file": (
        {"t@.toml": OK_TEMPLATE, "o.toml": OK_TEMPLATE, "t@1.toml": "->o.toml"},
        "t@1",
        "t@1.toml: file: is a symlink to 'o.toml': an instance file may only link to its own "
        "template t@.toml in the same directory",
    ),
    "symlink-to-another-template": (
        {"t@.toml": OK_TEMPLATE, "u@.toml": OK_TEMPLATE, "t@1.toml": "->u@.toml"},
        "t@1",
        "t@1.toml: file: is a symlink to 'u@.toml': an instance file may only link to its own "
        "template t@.toml in the same directory",
    ),
    "symlink-out-of-the-directory": (
        {"t@.toml": OK_TEMPLATE, "t@1.toml": "->/etc/passwd"},
        "t@1",
        "t@1.toml: file: is a symlink to '/etc/passwd': an instance file may only link to its own"
        " template t@.toml in the same directory",
    ),
    "empty-instance-without-template": (
        {"t@1.toml": ""},
        "t@1",
        "t@1.toml: file: an instance file (empty or a symlink) needs its template t@.toml as a "
        "regular file in the same directory",
    ),
    "dropin-syntax": (
        {"p.toml": OK_TEMPLATE, "p.toml.d/a.toml": "[resources\n"},
        "p",
        "p.toml.d/a.toml:1:11: syntax: invalid TOML: expected ']' at the end of a table "
        "declaration",
    ),
    "dropin-unknown-key": (
        {"p.toml": OK_TEMPLATE, "p.toml.d/a.toml": '\n[resources]\nmemroy_max = "1M"\n'},
        "p",
        'p.toml.d/a.toml:3: resources.memroy_max: unknown key (did you mean "memory_max"?)',
    ),
    "dropin-bad-value": (
        {"p.toml": OK_TEMPLATE, "p.toml.d/a.toml": "[resources]\ncpu_weight = 0\n"},
        "p",
        "p.toml.d/a.toml:2: resources.cpu_weight: input should be greater than or equal to 1, "
        "got 0",
    ),
    "dropin-replaces-a-table-with-a-value": (
        {"p.toml": OK_TEMPLATE, "p.toml.d/a.toml": 'service = "x"\n'},
        "p",
        "p.toml.d/a.toml:1: service: input should be a valid dictionary or instance of "
        "Service, got 'x'",
    ),
    "dropin-is-a-symlink": (
        {"p.toml": OK_TEMPLATE, "real.txt": "[resources]\n", "p.toml.d/a.toml": "->../real.txt"},
        "p",
        "p.toml.d/a.toml: file: is a symlink: unit files and drop-ins are not followed through "
        "symlinks, except an instance's link to its own template in the same directory "
        "(web@8080.toml -> web@.toml)",
    ),
    "dropin-not-utf8": (
        {"p.toml": OK_TEMPLATE, "p.toml.d/a.toml": b"# \xff\n"},
        "p",
        "p.toml.d/a.toml:1: file: not valid UTF-8 (byte 0xff): unit files are UTF-8 text",
    ),
    "specifier-expands-to-a-refused-mount": (
        {
            "t@.toml": '[service]\nexec = ["/bin/true"]\n[sandbox]\n'
            'mounts = [{ type = "tmpfs", target = "/%i" }]\n',
            "t@proc.toml": "",
        },
        "t@proc",
        "t@.toml:4: sandbox.mounts[0].target: target '/proc' is in the kernel's /proc",
    ),
    "dropin-adds-a-refused-mount": (
        {
            "p.toml": OK_TEMPLATE,
            "p.toml.d/m.toml": '[sandbox]\nmounts = [{ source = "/dev", target = "/d" }]\n',
        },
        "p",
        "p.toml.d/m.toml:2: sandbox.mounts[0].source: source '/dev' is in the kernel's /dev "
        "(list devices in sandbox.devices)",
    ),
    "template-missing-service": (
        {"t@.toml": "[resources]\npids_max = 5\n", "t@1.toml": ""},
        "t@1",
        "t@.toml: service: missing [service]: a unit needs at least [service] exec = [...]",
    ),
}


@pytest.mark.parametrize("case", list(CORPUS), ids=list(CORPUS))
def test_corpus_of_bad_templates_and_dropins(tmp_path: Path, case: str) -> None:
    files, unit, expected = CORPUS[case]
    for relative, content in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content.startswith("->"):
            path.symlink_to(content[2:])
        else:
            path.write_text(content)
    write(tmp_path / "good.toml", OK_TEMPLATE)
    result = load(tmp_path)
    assert "good" in result.specs  # one bad unit never blocks another
    if unit.endswith("@.toml"):  # a template's own section: no instance exists to carry it
        errors = result.template_errors[str(tmp_path / unit)]
    else:
        errors = result.errors[unit]
    assert errors, case
    if expected is None:
        assert "is not a valid instance name" in str(errors[0])
        return
    assert [str(e).removeprefix(f"{tmp_path}/") for e in errors] == [expected]


def test_unit_names_lists_instances_and_no_template(tmp_path: Path) -> None:
    write(tmp_path / "web@.toml", TEMPLATE)
    write(tmp_path / "web@8080.toml")
    write(tmp_path / "broken@.toml", "[oops\n")
    write(tmp_path / "db.toml", "not even toml")
    assert unit_names(tmp_path) == {"web@8081", "web@8080", "db"}


def test_the_state_record_keeps_the_sources_and_a_plain_units_record_its_old_shape(
    tmp_path: Path,
) -> None:
    from supervisor.engine.status import spec_from_json  # noqa: PLC0415 (engine over unit)

    write(tmp_path / "web@.toml", TEMPLATE)
    write(tmp_path / "web@.toml.d" / "a.toml", "[resources]\npids_max = 9\n")
    write(tmp_path / "plain.toml", OK_TEMPLATE)
    specs = load(tmp_path).specs
    again = spec_from_json(specs["web@8081"].to_json())
    assert again is not None and again.hash == specs["web@8081"].hash
    assert (again.template, again.dropins) == (
        specs["web@8081"].template,
        specs["web@8081"].dropins,
    )
    assert "template" not in specs["plain"].to_json() and "dropins" not in specs["plain"].to_json()
