"""`sandboxctl validate` through the real entry point: exit codes, stderr lines, summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.cli.main import COMMANDS, main
from supervisor.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

REPO_UNITS = Path(__file__).resolve().parents[3] / "units"
GOOD = '[service]\nexec = ["/bin/true"]\n'


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def units(directory: Path, **files: str) -> Path:
    directory.mkdir(exist_ok=True)
    for name, content in files.items():
        (directory / f"{name}.toml").write_text(content)
    return directory


def test_a_valid_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = units(tmp_path / "u", web=GOOD, db=GOOD)
    assert run(capsys, "validate", str(d)) == (EXIT_OK, "2 units valid\n", [])


def test_an_invalid_file_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = units(tmp_path / "u", web=GOOD, bad='[service]\nexec = ["true"]\n')
    code, out, err = run(capsys, "validate", str(d))
    assert code == EXIT_FAILURE
    assert out == "1 unit valid, 1 invalid\n"
    assert err == [f"{d}/bad.toml:2: service.exec[0]: must be an absolute path, got 'true'"]


def test_files_and_directories_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = units(tmp_path / "u", web=GOOD)
    one = units(tmp_path / "other", extra=GOOD) / "extra.toml"
    assert run(capsys, "validate", str(d), str(one)) == (EXIT_OK, "2 units valid\n", [])


def test_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", str(tmp_path / "nope.toml"))
    assert (code, out) == (EXIT_FAILURE, "0 units valid, 1 invalid\n")
    assert err == [f"{tmp_path}/nope.toml: file: cannot read: no such file or directory"]


def test_the_default_is_the_configured_units_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = units(tmp_path / "u", web=GOOD)
    config = tmp_path / "sandboxd.toml"
    config.write_text(f'units_dir = "{d}"\n')
    assert run(capsys, "validate", "--config", str(config)) == (EXIT_OK, "1 unit valid\n", [])


def test_a_missing_units_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "sandboxd.toml"
    config.write_text(f'units_dir = "{tmp_path}/none"\n')
    code, out, err = run(capsys, "validate", "--config", str(config))
    assert (code, out) == (EXIT_FAILURE, "0 units valid, 1 directory unreadable\n")
    assert err == [f"{tmp_path}/none: directory: cannot read: no such file or directory"]


def test_a_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "sandboxd.toml"
    config.write_text("unit_dir = '/x'\n")
    code, out, err = run(capsys, "validate", "--config", str(config))
    assert (code, out) == (EXIT_FAILURE, "")
    assert err == [f'sandboxctl: {config}: unit_dir: unknown key (did you mean "units_dir"?)']


def test_host_warnings_do_not_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = units(tmp_path / "u", web='[service]\nexec = ["/nonexistent/bin/web"]\n')
    code, out, err = run(capsys, "validate", str(d))
    assert (code, out) == (EXIT_OK, "1 unit valid (1 warning)\n")
    assert err == [
        f"{d}/web.toml:2: service.exec[0]: warning: /nonexistent/bin/web does not exist on this "
        "host"
    ]
    assert run(capsys, "validate", "--no-host-checks", str(d)) == (EXIT_OK, "1 unit valid\n", [])


def test_cross_unit_checks_in_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = units(tmp_path / "u", a=GOOD + "after = ['b']\n", b=GOOD + "after = ['a']\n", c=GOOD)
    code, out, err = run(capsys, "validate", str(d))
    assert (code, out) == (EXIT_FAILURE, "1 unit valid, 2 invalid\n")
    assert err == [
        f"{d}/a.toml:3: service.after: dependency cycle: a -> b -> a",
        f"{d}/b.toml:3: service.after: dependency cycle: b -> a -> b",
    ]


def test_files_named_one_by_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = units(tmp_path / "u", web=GOOD + "after = ['db', 'cache']\n", db=GOOD)
    # db is beside web.toml: fine; cache is nowhere: a warning, the file may be headed elsewhere.
    code, out, err = run(capsys, "validate", str(d / "web.toml"))
    assert (code, out) == (EXIT_OK, "1 unit valid (1 warning)\n")
    assert err == [
        f'{d}/web.toml:3: service.after[1]: warning: no unit named "cache" among or beside '
        "the files checked"
    ]


def test_warnings_carry_lines_in_line_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        "[resources]\n"  # 1
        "cpu_max = 4000\n"  # 2
        "[service]\n"  # 3
        'exec = ["/nonexistent/bin/web"]\n'  # 4
    )
    d = units(tmp_path / "u", web=text)
    for target in (d, d / "web.toml"):  # a directory and a file named: the same lines
        code, _, err = run(capsys, "validate", str(target))
        assert code == EXIT_OK
        assert [line.split(": ")[0].rsplit(":", 1)[1] for line in err] == ["2", "4"], err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    assert main(["no-such-verb"]) == EXIT_USAGE
    assert main(["validate", "--bogus"]) == EXIT_USAGE
    assert "usage: sandboxctl" in capsys.readouterr().err


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--help"]) == EXIT_OK
    assert "EXAMPLE:" in capsys.readouterr().out
    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "EXAMPLE:" in out
    assert all(verb in out for verb in COMMANDS)


def test_the_example_units_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", "--no-host-checks", str(REPO_UNITS))
    assert (code, err) == (EXIT_OK, [])
    assert 4 <= int(out.split()[0]) <= 8 and out.endswith(" units valid\n")


def test_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = units(
        tmp_path / "u",
        web=GOOD,
        bad='[service]\nexec = ["true"]\n',
        far='[service]\nexec = ["/no/such/binary"]\n',
    )
    code, out, err = run(capsys, "validate", "--json", str(d))
    assert (code, err) == (EXIT_FAILURE, [])  # the problems are in the report
    report = json.loads(out)
    assert report["valid"] == 2 and report["invalid"] == 1 and report["unreadable"] == 0
    assert report["summary"] == "2 units valid, 1 invalid (1 warning)"
    assert report["errors"] == [
        {"path": f"{d}/bad.toml", "line": 2, "key": "service.exec[0]",
         "message": "must be an absolute path, got 'true'"}
    ]  # fmt: skip
    [warning] = report["warnings"]
    assert warning["path"] == f"{d}/far.toml" and warning["key"] == "service.exec[0]"
    assert not warning["message"].startswith("warning:")


def test_json_all_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = units(tmp_path / "u", web=GOOD)
    code, out, _ = run(capsys, "validate", str(d), "--json")
    assert code == EXIT_OK
    assert json.loads(out) == {"valid": 1, "invalid": 0, "unreadable": 0,
                               "summary": "1 unit valid", "errors": [], "warnings": []}  # fmt: skip


def test_a_template_is_checked_but_not_counted_as_a_unit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = units(tmp_path / "u", **{"web@": '[service]\nexec = ["/bin/echo", "%i"]\n', "web@1": ""})
    assert run(capsys, "validate", str(d)) == (EXIT_OK, "1 unit valid\n", [])
    (d / "web@.toml").write_text(
        '[template]\ninstances = ["a/b"]\n[service]\nexec = ["/bin/true"]\n'
    )
    code, out, err = run(capsys, "validate", str(d))
    assert (code, out) == (EXIT_FAILURE, "1 unit valid, 1 invalid\n")
    assert [line.split(": ", 2)[:2] for line in err] == [
        [f"{d}/web@.toml:2", "template.instances[0]"]
    ]


def test_a_template_file_is_checked_through_its_instances(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = units(tmp_path / "u", **{"web@": '[template]\ninstances = ["a"]\n' + GOOD, "web@b": ""})
    assert run(capsys, "validate", str(d / "web@.toml")) == (EXIT_OK, "2 units valid\n", [])
    (d / "web@.toml").write_text('[service]\nexec = ["/bin/echo", "%q"]\n')
    code, out, err = run(capsys, "validate", str(d / "web@.toml"))
    assert (code, out) == (EXIT_FAILURE, "0 units valid, 1 invalid\n")
    assert len(err) == 1 and err[0].startswith(f"{d}/web@.toml:2: service.exec[1]: unknown spec")
    (d / "web@b.toml").unlink()
    code, out, err = run(capsys, "validate", str(d / "web@.toml"))
    assert (code, out) == (EXIT_OK, "0 units valid (1 warning)\n")
    assert err == [
        f"{d}/web@.toml: template: warning: no instance to check it with (an empty or linked "
        "NAME@INSTANCE.toml beside it, or [template] instances)"
    ]


def test_published_port_conflicts_between_files_and_with_a_host_listener(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket  # noqa: PLC0415

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        net = '[network]\nmode = "bridge"\nports = ["{}:80"]\n'
        d = units(
            tmp_path / "u",
            a=GOOD + net.format(18080), b=GOOD + net.format(18080), c=GOOD + net.format(busy),
        )  # fmt: skip
        files = [str(d / f"{n}.toml") for n in "abc"]
        code, out, err = run(capsys, "validate", *files)
        assert (code, out) == (EXIT_FAILURE, "1 unit valid, 2 invalid\n")
        assert err[0] == (
            f'{d}/b.toml:5: network.ports[0]: 18080:80/tcp conflicts with 18080:80/tcp of unit "a"'
        )
        assert err[1].startswith(f"{d}/c.toml:5: network.ports[0]: {busy}:80/tcp: ")
        assert err[1].endswith(f" listens on 127.0.0.1:{busy}/tcp")
        # Offline (--no-host-checks) the host's sockets are not looked at.
        code, out, err = run(capsys, "validate", "--no-host-checks", *files)
        assert (code, out) == (EXIT_FAILURE, "2 units valid, 1 invalid\n")


USERNS = '[service]\nexec = ["/bin/true"]\n[sandbox]\nuser_namespace = {}\n'


def test_overlapping_user_namespace_ranges_name_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "subuid").write_text("alice:3000000:65536\n")
    config = tmp_path / "sandboxd.toml"
    config.write_text(f'subuid_file = "{tmp_path / "subuid"}"\nsubgid_file = "/nonexistent"\n')
    d = units(
        tmp_path / "u",
        a=USERNS.format("{ base = 2000000 }"),
        b=USERNS.format("{ base = 2065535, size = 10 }"),
        c=USERNS.format("{ base = 3065535, size = 1 }"),
        d=USERNS.format('"pick"'),
    )
    for argv in ([str(d)], [str(d / f"{n}.toml") for n in "abcd"]):
        code, out, err = run(capsys, "validate", "--config", str(config), *argv)
        assert (code, out) == (EXIT_FAILURE, "2 units valid, 2 invalid\n"), err
        assert err == [
            f'{d}/b.toml:4: sandbox.user_namespace: 2065535-2065544 overlaps the range of unit "a"'
            " (2000000-2065535)",
            f"{d}/c.toml:4: sandbox.user_namespace: 3065535-3065535 overlaps "
            f"{tmp_path}/subuid entry of alice (3000000-3065535)",
        ]


def test_a_pool_too_small_for_the_units_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "sandboxd.toml"
    config.write_text(
        'userns_pool = "65536-196607"\nsubuid_file = "/nonexistent"\nsubgid_file = "/nonexistent"\n'
    )
    pick = USERNS.format('"pick"')
    d = units(tmp_path / "u", a=pick, b=pick, c=pick)
    code, out, err = run(capsys, "validate", "--config", str(config), str(d))
    assert (code, out) == (EXIT_FAILURE, "2 units valid, 1 invalid\n")
    assert err == [
        f"{d}/c.toml:4: sandbox.user_namespace: no free block of 65536 ids left in userns_pool "
        "65536-196607"
    ]


def test_default_units_pick_from_the_pool_and_host_ids_take_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A user namespace is the default: every unit without user_namespace = "host" needs a block.
    config = tmp_path / "sandboxd.toml"
    config.write_text(
        'userns_pool = "65536-196607"\nsubuid_file = "/nonexistent"\nsubgid_file = "/nonexistent"\n'
    )
    plain = '[service]\nexec = ["/bin/true"]\n'
    d = units(tmp_path / "u", a=plain, b=plain, c=plain, h=USERNS.format('"host"'))
    code, out, err = run(capsys, "validate", "--config", str(config), str(d))
    assert (code, out) == (EXIT_FAILURE, "3 units valid, 1 invalid\n")
    assert err == [
        f"{d}/c.toml: sandbox.user_namespace: no free block of 65536 ids left in userns_pool "
        "65536-196607"
    ]
