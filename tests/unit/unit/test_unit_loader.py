"""Every bad input of issue 2 gives one clear `FILE[:LINE]: KEY: message` line."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import supervisor.unit.loader as loader_module
from supervisor.unit.diagnostics import key_lines, locate
from supervisor.unit.loader import (
    MAX_FILE_SIZE,
    UnitError,
    UnitFileError,
    UnitLoader,
    load_unit,
)
from supervisor.unit.spec import UnitSpec

SERVICE = '[service]\nexec = ["/bin/true"]\n'
MINIMAL = SERVICE
WriteUnit = Callable[..., Path]  # the `write_unit` fixture (conftest.py)


def lines_of(path: Path, name: str | None = None) -> list[str]:
    with pytest.raises(UnitFileError) as info:
        load_unit(path, name)
    assert str(info.value) == "\n".join(str(e) for e in info.value.errors)
    return [str(e).removeprefix(f"{path}") for e in info.value.errors]


def test_a_minimal_unit_loads(write_unit: WriteUnit) -> None:
    spec = load_unit(write_unit("web"))
    assert spec.name == "web"
    assert spec.unit.service.exec == ["/bin/true"]
    assert spec.path.endswith("web.toml")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            '[service\nexec = ["/bin/true"]\n',
            ":1:9: syntax: invalid TOML: expected ']' at the end of a table declaration",
            id="toml-syntax",
        ),
        pytest.param(
            '[service]\nexec = ["/bin/true"\n',
            ": syntax: invalid TOML: unclosed array (at end of file)",
            id="toml-unclosed",
        ),
        pytest.param(
            SERVICE + "\n[resources]\nmemory_hihg = '64M'\n",
            ':5: resources.memory_hihg: unknown key (did you mean "memory_high"?)',
            id="unknown-key",
        ),
        pytest.param(
            SERVICE + "[restrat]\npolicy = 'no'\n",
            ':3: restrat: unknown section (did you mean "restart"?)',
            id="unknown-section",
        ),
        pytest.param(
            SERVICE + "[resources]\npids_max = 'lots'\n",
            ":4: resources.pids_max: input should be a valid integer, got 'lots'",
            id="wrong-type",
        ),
        pytest.param(
            SERVICE + "autostart = 'yes'\n",
            ":3: service.autostart: input should be a valid boolean, got 'yes'",
            id="wrong-type-bool",
        ),
        pytest.param(
            '[service]\nexec = "/bin/true"\n',
            ":2: service.exec: input should be a valid list, got '/bin/true'",
            id="exec-not-a-list",
        ),
        pytest.param(
            '[service]\nexec = ["bin/true"]\n',
            ":2: service.exec[0]: must be an absolute path, got 'bin/true'",
            id="relative-exec",
        ),
        pytest.param(
            "[service]\nexec = []\n", ":2: service.exec: must not be empty", id="empty-exec"
        ),
        pytest.param(
            "[service]\nuser = 'root'\n",
            ":1: service.exec: required key is missing",
            id="missing-exec",
        ),
        pytest.param(
            "[sandbox]\nroot = 'host'\n",
            ": service: missing [service]: a unit needs at least [service] exec = [...]",
            id="missing-service",
        ),
        pytest.param(
            SERVICE + "[resources]\nmemory_max = '-64M'\n",
            ":4: resources.memory_max: size '-64M' is negative",
            id="negative-size",
        ),
        pytest.param(
            SERVICE + "[resources]\nmemory_max = '100T'\n",
            ":4: resources.memory_max: size '100T' is larger than 64T; is the suffix right?",
            id="absurd-size",
        ),
        pytest.param(
            SERVICE + "stop_timeout = '-1s'\n",
            ":3: service.stop_timeout: duration '-1s' is negative",
            id="negative-duration",
        ),
        pytest.param(
            SERVICE + "[restart]\nmax_delay = '9999h'\n",
            ":4: restart.max_delay: duration '9999h' is longer than a year; is the unit right?",
            id="absurd-duration",
        ),
        pytest.param(
            SERVICE + "[restart]\ndelay = '10m'\nmax_delay = '1m'\n",
            ":4: restart.delay: delay (10m) is above max_delay (1m)",
            id="delay-above-max",
        ),
        pytest.param(
            SERVICE + "[resources]\nmemory_max = '64M'\nmemory_high = '128M'\n",
            ":5: resources.memory_high: memory_high (128M) is above memory_max (64M): "
            "the hard limit would hit first",
            id="memory-high-above-max",
        ),
        pytest.param(
            SERVICE + "[security]\ncapabilities = ['CHOWN', 'NET_ADMN']\n",
            ":4: security.capabilities[1]: unknown capability 'NET_ADMN' "
            '(did you mean "NET_ADMIN"?)',
            id="unknown-capability",
        ),
        pytest.param(
            SERVICE + "stop_signal = 'SIGFOO'\n",
            ":3: service.stop_signal: unknown or unusable signal 'SIGFOO'",
            id="unknown-signal",
        ),
        pytest.param(
            SERVICE + "[sandbox]\nmounts = [\n  { source = '/srv', target = '/data' },\n"
            "  { type = 'tmpfs', target = '/data/' },\n]\n",
            ":4: sandbox.mounts: two mounts have the target '/data'",
            id="duplicate-mount-targets",
        ),
        pytest.param(
            SERVICE + "[sandbox]\nmounts = [{ source = '/srv' }]\n",
            ":4: sandbox.mounts[0].target: required key is missing",
            id="mount-missing-target",
        ),
        pytest.param(
            SERVICE + "[sandbox]\nmounts = [{ type = 'nfs', target = '/data' }]\n",
            ":4: sandbox.mounts[0]: unknown type 'nfs': expected one of 'bind', 'tmpfs'",
            id="mount-unknown-type",
        ),
        pytest.param(
            SERVICE + "[network]\nmode = 'host'\n[sandbox]\nnamespaces = ['pid', 'mount', 'net']\n",
            ':6: sandbox.namespaces: lists "net" but network.mode is "host"',
            id="host-network-with-netns",
        ),
        pytest.param(
            SERVICE + "[health]\nexec = ['redis-cli', 'ping']\n",
            ":4: health.exec[0]: must be an absolute path, got 'redis-cli'",
            id="relative-health-exec",
        ),
        pytest.param(
            SERVICE + "after = ['../x']\n",
            ":3: service.after[0]: string should match pattern "
            "'^(?:[A-Za-z0-9][A-Za-z0-9_.@-]{0,62})$', got '../x'",
            id="unsafe-after",
        ),
        pytest.param(
            "service.exec = ['/bin/true']\nservice.stop_signal = 'NOPE'\n",
            ":2: service.stop_signal: unknown or unusable signal 'NOPE'",
            id="dotted-keys",
        ),
        pytest.param(
            "", ": file: empty file: a unit needs at least [service] exec = [...]", id="empty"
        ),
        pytest.param(
            "  \n\n", ": file: empty file: a unit needs at least [service] exec = [...]", id="blank"
        ),
        pytest.param(
            b'[service]\nexec = ["/bin/caf\xe9"]\n',
            ":2: file: not valid UTF-8 (byte 0xe9): unit files are UTF-8 text",
            id="not-utf8",
        ),
    ],
)
def test_bad_input_gives_one_clear_line(
    write_unit: WriteUnit, content: str | bytes, expected: str
) -> None:
    assert lines_of(write_unit("web", content)) == [expected]


def test_several_problems_are_all_reported(write_unit: WriteUnit) -> None:
    path = write_unit("web", SERVICE + "stop_signal = 'SIGFOO'\n[resources]\ncpu_weight = 0\n")
    assert lines_of(path) == [
        ":3: service.stop_signal: unknown or unusable signal 'SIGFOO'",
        ":5: resources.cpu_weight: input should be greater than or equal to 1, got 0",
    ]


@pytest.mark.parametrize("name", ["../x", "a b", "x" * 200, ".hidden", "-x", ""])
def test_unsafe_unit_names(write_unit: WriteUnit, name: str) -> None:
    [line] = lines_of(write_unit("web"), name=name)
    shown = repr(name) if len(name) <= 40 else repr(name[:40]) + "..."
    assert line == (
        f": name: {shown} is not a valid unit name: use 1-63 letters, digits, '_', '.', '@' "
        "or '-', starting with a letter or digit"
    )


def test_the_name_defaults_to_the_file_stem(write_unit: WriteUnit) -> None:
    [line] = lines_of(write_unit("my web"))
    assert line.startswith(": name: 'my web' is not a valid unit name")
    [line] = lines_of(write_unit("x" * 200))
    assert line.startswith(f": name: '{'x' * 40}'... is not a valid unit name")


def test_a_bad_name_and_bad_content_are_both_reported(write_unit: WriteUnit) -> None:
    assert [line.split(":")[1].strip() for line in lines_of(write_unit("a b", ""))] == [
        "name",
        "file",
    ]


def test_unreadable_files(tmp_path: Path) -> None:
    assert lines_of(tmp_path / "missing.toml") == [": file: cannot read: no such file or directory"]
    (tmp_path / "dir.toml").mkdir()
    assert lines_of(tmp_path / "dir.toml") == [": file: not a regular file"]
    os.mkfifo(tmp_path / "fifo.toml")  # must not block
    assert lines_of(tmp_path / "fifo.toml") == [": file: not a regular file"]
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_FILE_SIZE + 1))
    assert lines_of(big) == [f": file: file too large ({MAX_FILE_SIZE + 1} bytes; the limit is 1M)"]


def test_permission_denied(write_unit: WriteUnit, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_unit("web")
    real_open = os.open

    def deny(target: str, flags: int, mode: int = 0o777) -> int:
        if target == str(path):  # as chmod 0 would for a non-root caller
            raise PermissionError(13, "Permission denied", target)
        return real_open(target, flags, mode)

    monkeypatch.setattr(os, "open", deny)
    assert lines_of(path) == [": file: cannot read: permission denied"]


def test_a_byte_order_mark_is_accepted(write_unit: WriteUnit) -> None:
    assert load_unit(write_unit("web", "\ufeff" + MINIMAL)).unit.service.exec == ["/bin/true"]


def test_unit_error_shape() -> None:
    assert str(UnitError("a.toml", "service.exec", "must not be empty", 3)) == (
        "a.toml:3: service.exec: must not be empty"
    )
    assert str(UnitError("a.toml", "file", "empty file")) == "a.toml: file: empty file"
    assert str(UnitError("a.toml", "syntax", "invalid TOML: x", 3, 7)) == (
        "a.toml:3:7: syntax: invalid TOML: x"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param('[service]\nexec = ["/bin/true"]\nuser = app\n', ":3:8:", id="bare-value"),
        pytest.param('[service]\nexec = ["/bin/true"\nuser = "a"\n', ":3:1:", id="unclosed"),
        pytest.param("[service]\n  exec ==\n", ":2:9:", id="indented"),
    ],
)
def test_toml_syntax_errors_carry_line_and_column(
    write_unit: WriteUnit, content: str, expected: str
) -> None:
    [line] = lines_of(write_unit("web", content))
    assert line.startswith(expected + " syntax: invalid TOML: "), line
    assert "(column" not in line and "at line" not in line


def test_problems_of_one_file_are_listed_in_line_order(write_unit: WriteUnit) -> None:
    # pydantic reports by schema field order (service before sandbox, exec before user);
    # the reader gets them top to bottom, with the unlocatable name error last.
    text = (
        "[sandbox]\n"  # 1
        "hostname = 7\n"  # 2
        "[resources]\n"  # 3
        "cpu_weight = 0\n"  # 4
        "[service]\n"  # 5
        "user = []\n"  # 6
        'exec = ["rel"]\n'  # 7
    )
    lines = lines_of(write_unit("bad name", text))
    assert [line.split(":")[1] for line in lines] == ["2", "4", "6", "7", " name"]
    assert lines[-1].startswith(": name: 'bad name' is not a valid unit name")


def test_array_elements_are_located_on_their_own_lines(write_unit: WriteUnit) -> None:
    text = (
        '[service]\nexec = ["/bin/true"]\n'  # 1-2
        "[[sandbox.mounts]]\n"  # 3
        'source = "/srv"\ntarget = "/srv"\n'  # 4-5
        "[[sandbox.mounts]]\n"  # 6
        'source = "/var"\n'  # 7
        'target = "rel"\n'  # 8
        "[[sandbox.devices]]\n"  # 9
        'path = "/dev/null"\n'  # 10
        "[[sandbox.devices]]\n"  # 11
        'path = "/dev/zero"\n'  # 12
        'access = "x"\n'  # 13
    )
    assert [line.split(": ")[0:2] for line in lines_of(write_unit("web", text))] == [
        [":8", "sandbox.mounts[1].target"],
        [":13", "sandbox.devices[1].access"],
    ]
    inline = (
        '[service]\nexec = ["/bin/true"]\n[sandbox]\nmounts = [\n'  # 1-4
        '  { source = "/srv", target = "/srv" },\n'  # 5
        "  # a comment between elements\n"  # 6
        '  { type = "tmpfs", target = "/tmp/x", size = "1K" },\n'  # 7
        "]\n"
    )
    [line] = lines_of(write_unit("web", inline))
    assert line.startswith(":7: sandbox.mounts[1].size: "), line


def test_lines_inside_a_multiline_string_are_not_keys(write_unit: WriteUnit) -> None:
    text = (
        '[service]\nexec = ["/bin/sh", "-c", """\n'  # 1-2
        "user = nobody\n"  # 3: script text, not a key
        '"""]\n'  # 4
        "user = []\n"  # 5
    )
    [line] = lines_of(write_unit("web", text))
    assert line.startswith(":5: service.user: "), line


# --- directories -------------------------------------------------------------------------------


def test_a_directory_of_1000_units_with_3_bad(tmp_path: Path, write_unit: WriteUnit) -> None:
    for i in range(1000):
        write_unit(f"unit{i:04d}", f'[service]\nexec = ["/bin/echo", "{i}"]\n')
    write_unit("unit0100", '[service]\nexec = ["echo"]\n')
    write_unit("unit0500", "[service\n")
    write_unit("unit0999", b"\xff")
    result = UnitLoader().load_directory(tmp_path)
    assert len(result.specs) == 997
    assert {name: [str(e) for e in errs] for name, errs in result.errors.items()} == {
        "unit0100": [
            f"{tmp_path}/unit0100.toml:2: service.exec[0]: must be an absolute path, got 'echo'"
        ],
        "unit0500": [
            f"{tmp_path}/unit0500.toml:1:9: syntax: invalid TOML: expected ']' at the end of a "
            "table declaration"
        ],
        "unit0999": [
            f"{tmp_path}/unit0999.toml:1: file: not valid UTF-8 (byte 0xff): "
            "unit files are UTF-8 text"
        ],
    }
    assert not result.ok


def test_only_visible_toml_files_are_units(tmp_path: Path, write_unit: WriteUnit) -> None:
    write_unit("web")
    (tmp_path / "README").write_text("not a unit")
    (tmp_path / "web.toml~").write_text("backup")
    (tmp_path / ".#web.toml").write_text("editor lock")
    (tmp_path / "sub").mkdir()
    result = UnitLoader().load_directory(tmp_path)
    assert list(result.specs) == ["web"] and result.ok


def test_a_bad_file_name_is_keyed_by_file_name(write_unit: WriteUnit, tmp_path: Path) -> None:
    write_unit("my web")
    assert list(UnitLoader().load_directory(tmp_path).errors) == ["my web.toml"]


def test_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(UnitFileError) as info:
        UnitLoader().load_directory(tmp_path / "nope")
    assert str(info.value) == f"{tmp_path}/nope: directory: cannot read: no such file or directory"


def test_after_naming_an_unknown_unit(write_unit: WriteUnit, tmp_path: Path) -> None:
    write_unit("db", "")  # invalid, but it exists: web's `after` is not the problem
    write_unit("web", SERVICE + "after = ['db', 'cache']\n")
    result = UnitLoader().load_directory(tmp_path)
    assert [str(e) for e in result.errors["web"]] == [
        f'{tmp_path}/web.toml:3: service.after[1]: no unit named "cache"'
    ]
    assert set(result.errors) == {"db", "web"} and not result.specs


def test_dependency_cycles_are_errors(write_unit: WriteUnit, tmp_path: Path) -> None:
    write_unit("a", SERVICE + "after = ['b']\n")
    write_unit("b", SERVICE + "after = ['c']\n")
    write_unit("c", SERVICE + "after = ['a']\n")
    write_unit("self", SERVICE + "after = ['self']\n")
    write_unit("d", SERVICE + "after = ['a']\n")  # waits on a cycle, but is not in one
    result = UnitLoader().load_directory(tmp_path)
    assert list(result.specs) == ["d"]
    assert {n: [e.message for e in errs] for n, errs in result.errors.items()} == {
        "a": ["dependency cycle: a -> b -> c -> a"],
        "b": ["dependency cycle: b -> c -> a -> b"],
        "c": ["dependency cycle: c -> a -> b -> c"],
        "self": ["dependency cycle: self -> self"],
    }
    assert str(result.errors["a"][0]) == (
        f"{tmp_path}/a.toml:3: service.after: dependency cycle: a -> b -> c -> a"
    )


def test_cycles_across_after_requires_and_wants_are_errors(
    write_unit: WriteUnit, tmp_path: Path
) -> None:
    write_unit("web", SERVICE + "requires = ['db']\n")
    write_unit("db", SERVICE + "wants = ['cache']\n")
    write_unit("cache", SERVICE + "after = ['web']\n")
    write_unit("api", SERVICE + "requires = ['web']\nwants = ['db']\n")  # waits on a cycle
    result = UnitLoader().load_directory(tmp_path)
    assert list(result.specs) == ["api"]
    assert [str(e) for e in result.errors["web"]] == [
        f"{tmp_path}/web.toml:3: service.requires: dependency cycle: web -> db -> cache -> web"
    ]
    assert [str(e) for e in result.errors["db"]] == [
        f"{tmp_path}/db.toml:3: service.wants: dependency cycle: db -> cache -> web -> db"
    ]


def test_requires_and_wants_must_name_units(write_unit: WriteUnit, tmp_path: Path) -> None:
    write_unit("db", SERVICE)
    write_unit("web", SERVICE + "requires = ['db', 'queue']\nwants = ['cache']\n")
    write_unit("twice", SERVICE + "requires = ['db', 'db']\n")
    result = UnitLoader().load_directory(tmp_path)
    assert [str(e) for e in result.errors["web"]] == [
        f'{tmp_path}/web.toml:3: service.requires[1]: no unit named "queue"',
        f'{tmp_path}/web.toml:4: service.wants[0]: no unit named "cache"',
    ]
    assert [e.message for e in result.errors["twice"]] == ["lists a unit twice"]


# --- the cache ---------------------------------------------------------------------------------


def test_unchanged_files_are_not_parsed_again(
    write_unit: WriteUnit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_unit("web")
    write_unit("bad", "")
    loader = UnitLoader()
    first = loader.load_directory(tmp_path)
    calls: list[str] = []
    real_parse = loader_module.parse_unit

    def counting_parse(path: str, name: str, data: bytes) -> UnitSpec:
        calls.append(name)
        return real_parse(path, name, data)

    monkeypatch.setattr(loader_module, "parse_unit", counting_parse)
    second = loader.load_directory(tmp_path)
    assert calls == []
    assert second.specs["web"] is first.specs["web"]
    assert second.errors == first.errors


def test_a_same_size_edit_within_the_same_second_is_seen(
    write_unit: WriteUnit, tmp_path: Path
) -> None:
    path = write_unit("web", SERVICE + "stop_timeout = '1s'\n")
    loader = UnitLoader()
    assert loader.load_directory(tmp_path).specs["web"].unit.service.stop_timeout == 1.0
    stat = path.stat()
    path.write_text(SERVICE + "stop_timeout = '2s'\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime, same size, same inode
    assert loader.load_directory(tmp_path).specs["web"].unit.service.stop_timeout == 2.0


def _read_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader's reads happen 10 s after now: a file written by the test (ctime now) is
    then past the racy window, trusted by its signature, without the test waiting."""
    real = time.time_ns
    monkeypatch.setattr(loader_module.time, "time_ns", lambda: real() + 10_000_000_000)


def _next_ctime_tick(path: Path) -> None:
    """Wait until a change made now gets a ctime other than `path`'s (the kernel's timestamps
    are coarse: a few ms); bounded by one tick, no clock read."""
    before = path.stat().st_ctime_ns
    probe = path.with_name(".tick")
    while True:
        probe.write_text("")
        if probe.stat().st_ctime_ns != before:
            probe.unlink()
            return


def test_old_unchanged_files_are_trusted_by_stat(
    write_unit: WriteUnit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_unit("web")
    os.utime(path, (1_000_000_000, 1_000_000_000))  # long before our read: not racy
    _read_later(monkeypatch)
    loader = UnitLoader()
    loader.load_directory(tmp_path)
    monkeypatch.setattr(loader_module, "read_unit_bytes", lambda p: pytest.fail("read again"))
    assert "web" in loader.load_directory(tmp_path).specs


def test_an_edit_that_puts_mtime_back_is_seen_by_its_ctime(
    write_unit: WriteUnit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`touch -d`, `cp -p` or a deploy tool can put an edited file's mtime back, and a same-size
    edit then keeps mtime, size and inode: the signature's ctime still moved (nobody sets it),
    so a trusted entry is read again. No watch here: this is the signature rule alone."""
    path = write_unit("web", SERVICE + "stop_timeout = '1s'\n")
    os.utime(path, (1_000_000_000, 1_000_000_000))
    _read_later(monkeypatch)  # the entry is trusted: no read unless the signature moves
    loader = UnitLoader()
    assert loader.load_directory(tmp_path).specs["web"].unit.service.stop_timeout == 1.0
    _next_ctime_tick(path)
    with open(path, "r+") as f:  # in place: same inode, same size
        f.write(SERVICE + "stop_timeout = '2s'\n")
    os.utime(path, (1_000_000_000, 1_000_000_000))  # `touch -d @1000000000`
    assert loader.load_directory(tmp_path).specs["web"].unit.service.stop_timeout == 2.0


def test_edits_and_removals_are_seen(write_unit: WriteUnit, tmp_path: Path) -> None:
    path = write_unit("web")
    loader = UnitLoader()
    loader.load_directory(tmp_path)
    path.write_text("[service]\nexec = []\n")
    assert "web" in loader.load_directory(tmp_path).errors
    path.unlink()
    result = loader.load_directory(tmp_path)
    assert not result.specs and not result.errors


def test_a_key_of_the_users_own_is_written_as_toml_writes_it(write_unit: WriteUnit) -> None:
    """Regression (scripts/fuzz.sh, 2026-12-06): an env name holding a newline split the error
    over two lines; now every user-chosen key that is not a bare TOML key is quoted."""
    path = write_unit(
        "web", SERVICE + '[service.env]\n"A\\n" = false\n"\\u001b[2J" = 1\nOK_NAME = true\n'
    )
    lines = lines_of(path)
    # A quoted key's own line is not found: its section's line is shown.
    assert ':3: service.env."A\\n": input should be a valid string, got False' in lines
    assert ':3: service.env."\\u001b[2J": input should be a valid string, got 1' in lines
    assert ":6: service.env.OK_NAME: input should be a valid string, got True" in lines
    assert all("\n" not in line and "\x1b" not in line for line in lines)


def test_the_key_locator_reads_headers_dotted_and_quoted_keys() -> None:
    text = (
        "# a comment\n"  # 1
        "service.exec = ['/bin/true']\n"  # 2: a dotted key at the top level
        "[service.env]\n"  # 3
        '"MY VAR" = "x"\n'  # 4
        "  PATH = '/bin'  # indented\n"  # 5
        "[[ sandbox.mounts ]]\n"  # 6: spaces inside the brackets
        "target = '/a'\n"  # 7
        "[[sandbox.mounts]]\n"  # 8
        "target = '/b'\n"  # 9
    )
    lines = key_lines(text)
    assert lines[("service", "exec")] == 2
    assert lines[("service", "env", "MY VAR")] == 4
    assert lines[("service", "env", "PATH")] == 5
    assert lines[("sandbox", "mounts", 0, "target")] == 7
    assert lines[("sandbox", "mounts", 1, "target")] == 9
    assert locate(lines, ("sandbox", "mounts", 1, "source")) == 8, "the element's header"
    assert locate(lines, ("network", "mode")) is None
