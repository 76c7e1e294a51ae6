"""`sandboxctl run`'s unit from -p and the command, and the exit status it reports (pure: no
daemon)."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.cli.commands.run import LAUNCH_FAILED, status_of
from supervisor.cli.properties import PropertyError, build, resolve, value


def test_values_are_toml_else_strings() -> None:
    assert value("64M") == "64M" and value("/srv/root") == "/srv/root"
    assert value("false") is False and value("64") == 64 and value('["db"]') == ["db"]
    assert value("10s") == "10s" and value('"quoted"') == "quoted"


def test_build_nests_keys_and_defaults_to_no_restart() -> None:
    unit = build(["resources.memory_max=64M", "service.env.LANG=C", "sandbox.root=/srv/r"],
                 ["/bin/echo", "hi"])  # fmt: skip
    assert unit == {
        "resources": {"memory_max": "64M"},
        "service": {"env": {"LANG": "C"}, "exec": ["/bin/echo", "hi"]},
        "sandbox": {"root": "/srv/r"},
        "restart": {"policy": "no"},
    }
    assert build(["restart.policy=always"], ["/bin/true"])["restart"] == {"policy": "always"}


@pytest.mark.parametrize(
    ("props", "command", "message"),
    [
        (["memory_max=64M"], ["/bin/true"], "-p memory_max: a key is SECTION.KEY"),
        (["resources.memory_max"], ["/bin/true"], "-p resources.memory_max: expected"),
        (["a.b=1", "a.b=2"], ["/bin/true"], "-p a.b: given twice"),
        (["a.b=1", "a.b.c=2"], ["/bin/true"], "-p a.b.c: a.b is not a table"),
        (["service.exec=['/bin/true']"], ["/bin/true"], "-p service.exec: give the command"),
        ([], [], "give a command"),
        ([], ["./x"], "./x: give a command name or an absolute path"),
    ],
)
def test_bad_input_names_the_key(props: list[str], command: list[str], message: str) -> None:
    with pytest.raises(PropertyError, match="^" + message.replace(".", r"\.")):
        build(props, command)


def test_a_bare_name_is_looked_for_in_the_sandbox_root(tmp_path: Path) -> None:
    tool = tmp_path / "usr" / "bin" / "tool"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert resolve("tool", str(tmp_path)) == "/usr/bin/tool"
    assert resolve("sh", "host") in ("/usr/bin/sh", "/bin/sh", "/usr/sbin/sh", "/sbin/sh")
    with pytest.raises(PropertyError, match="sh: not found"):
        resolve("sh", str(tmp_path))


def test_a_name_is_found_as_shutil_which_finds_it(tmp_path: Path) -> None:
    """The first executable file in the search path's order: a directory or a file without
    the execute bit of that name earlier on is passed over (as shutil.which does)."""
    for d in ("usr/local/sbin", "usr/local/bin", "usr/sbin", "bin"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "usr/local/sbin/tool").mkdir()  # a directory
    (tmp_path / "usr/local/bin/tool").write_text("not executable\n")
    for d in ("usr/sbin", "bin"):
        (tmp_path / d / "tool").write_text("#!/bin/sh\n")
        (tmp_path / d / "tool").chmod(0o755)
    assert resolve("tool", str(tmp_path)) == "/usr/sbin/tool"


def test_exit_status_like_a_shell() -> None:
    assert status_of("exit-code:0") == 0 and status_of("exit-code:7") == 7
    assert status_of("signal:SIGTERM") == 143 and status_of("oom-killed") == 137
    assert status_of("launch-error:exec: no such file") == LAUNCH_FAILED == 126
    assert status_of("lost") == 1 and status_of(None) == 1
