from __future__ import annotations

import datetime as dt
import json

import pytest
from cli_helpers import sandboxctl

from supervisor.api.testing import FakeController, ServerThread, make_status
from supervisor.cli import render
from supervisor.cli.commands.status import detail_lines, row


def test_table_is_aligned_without_color(daemon: ServerThread) -> None:
    result = sandboxctl("status")
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert lines[0].split() == ["UNIT", "STATE", "PID", "UPTIME", "RESTARTS", "MEMORY", "LAST-EXIT"]
    assert [line.split()[0] for line in lines[1:]] == ["cron", "db", "web"]
    state_col = lines[0].index("STATE")
    assert all(line[state_col:].split()[0] in {"STATE", "stopped", "backoff", "running"}
               for line in lines)  # fmt: skip
    web = lines[3].split()
    assert web[2] == "4242" and web[4] == "2" and web[5] == "12.0M" and web[6] == "-"
    assert lines[1].split()[2:4] == ["-", "-"]
    assert "\033[" not in result.out


def test_json_is_the_contract(daemon: ServerThread) -> None:
    result = sandboxctl("status", "--json")
    assert result.code == 0
    units = json.loads(result.out)["units"]
    assert [u["name"] for u in units] == ["cron", "db", "web"]
    for key in ("name", "state", "pid", "restarts", "last_exit", "oom_kills", "memory_bytes",
                "started_at", "error", "health"):  # fmt: skip
        assert key in units[0]


def test_json_on_a_pipe_is_the_line_json_dumps_writes(
    daemon: ServerThread, controller: FakeController
) -> None:
    """Every unit's --json is the daemon's answer as it came: the same line json.dumps makes
    of the units; named units are encoded from what was read."""
    result = sandboxctl("status", "--json")
    assert result.code == 0
    assert result.out == json.dumps({"units": json.loads(result.out)["units"]}) + "\n"
    assert result.out == controller.list_text() + "\n"
    named = sandboxctl("status", "web", "cron", "--json")
    units = json.loads(named.out)["units"]
    assert [u["name"] for u in units] == ["web", "cron"]
    assert named.out == json.dumps({"units": units}) + "\n"


def test_named_units_and_exit_codes(daemon: ServerThread) -> None:
    assert sandboxctl("status", "web").code == 0
    assert sandboxctl("status", "db").code == 3
    assert sandboxctl("status", "web", "cron").code == 3
    result = sandboxctl("status", "web", "nope")
    assert result.code == 4 and result.err == "sandboxctl: no such unit: nope\n"
    result = sandboxctl("status", "nope")
    assert result.code == 4 and result.err == "sandboxctl: no such unit: nope\n"
    result = sandboxctl("status", "web", "--json")
    assert json.loads(result.out)["units"][0]["limits"]["pids_max"] == 1024


def test_detail_shows_limits_usage_oom_and_events(daemon: ServerThread) -> None:
    out = sandboxctl("status", "web").out
    assert out.startswith("web: running\n")
    assert "oom kills:    1 (memory_max 256.0M)" in out
    assert "limits:       memory_max=256.0M pids_max=1024 cpu_max=0.5" in out
    assert "usage:        memory 12.0M, cpu 1.5s, pids 3" in out
    assert "recent exits: oom-killed" in out


def test_detail_and_json_show_the_bridge_address(daemon: ServerThread) -> None:
    out = sandboxctl("status", "web").out
    assert (
        "network:      bridge 10.88.0.2/16 (mac 02:5b:0a:58:00:02, bridge sbx0, "
        "gateway 10.88.0.1)\n" in out
    )
    detail = json.loads(sandboxctl("status", "web", "--json").out)["units"][0]
    listed = json.loads(sandboxctl("status", "--json").out)["units"]
    assert detail["network"]["address"] == "10.88.0.2/16"
    assert [u["network"] for u in listed if u["name"] == "web"] == [detail["network"]]
    assert "network:      none\n" in sandboxctl("status", "cron").out


def test_a_bridge_unit_before_its_first_lease() -> None:
    unit = {"name": "web", "state": "stopped", "network": {"mode": "bridge", "address": None,
                                                           "bridge": "sbx0"}}  # fmt: skip
    lines = detail_lines(unit, dt.datetime.now(dt.UTC), color=False)
    assert "  network:      bridge (no address leased yet; bridge sbx0)" in lines


def test_a_bridge_unit_with_an_ipv6_lease() -> None:
    network = {"mode": "bridge", "address": "10.88.0.2/16", "mac": "02:5b:0a:58:00:02",
               "bridge": "sbx0", "gateway": "10.88.0.1", "address6": "fd00:88::2/64",
               "gateway6": "fd00:88::1"}  # fmt: skip
    unit = {"name": "web", "state": "stopped", "network": network}
    lines = detail_lines(unit, dt.datetime.now(dt.UTC), color=False)
    assert (
        "  network:      bridge 10.88.0.2/16 fd00:88::2/64 (mac 02:5b:0a:58:00:02, bridge sbx0, "
        "gateway 10.88.0.1, gateway6 fd00:88::1)"
    ) in lines


def test_backoff_says_when_and_why(daemon: ServerThread) -> None:
    out = sandboxctl("status", "db").out
    assert "next start:   in 2.5s (after exit-code:1)" in out


def test_recent_events_listed() -> None:
    unit = {
        "name": "web", "state": "running", "pid": 7, "restarts": 0,
        "recent_events": [{"at": "2024-01-01T00:00:00+00:00", "event": "started",
                           "state": "running", "detail": {"pid": 7}}],
    }  # fmt: skip
    lines = detail_lines(unit, dt.datetime.now(dt.UTC), color=False)
    assert lines[-2:] == [
        "  recent events:",
        "    2024-01-01T00:00:00+00:00  started    running pid=7",
    ]


def test_color_only_on_a_tty() -> None:
    lines = render.table(["UNIT", "STATE"], [["web", "running"]], ["32"], color=True)
    assert lines[1] == "web   \033[32mrunning\033[0m"
    assert (
        render.table(["UNIT", "STATE"], [["web", "running"]], ["32"], False)[1] == "web   running"
    )


def test_the_table_shows_control_and_bidi_characters_escaped() -> None:
    """A service controls some cells (its exit text, its name in an error): a cell that would
    move the cursor, colour or reorder the line is shown escaped, and the columns are as wide
    as the escaped text; printable text, non-ASCII included, is left as it is."""
    rows = [["web", "running", "exit \x1b[2J"], ["db", "failed", "\u202egnp.exe"]]
    lines = render.table(["UNIT", "STATE", "LAST-EXIT"], rows, [None, None], color=False)
    assert lines == [
        "UNIT  STATE    LAST-EXIT",
        "web   running  exit \\x1b[2J",
        "db    failed   \\u202egnp.exe",
    ]
    plain = render.table(["UNIT", "STATE"], [["wéb", "running"]], [None], color=False)
    assert plain == ["UNIT  STATE", "wéb   running"]


def test_a_unit_with_uptime_is_shown_without_the_wall_clock() -> None:
    """The table and `status UNIT` read the wall clock (and import datetime) only for a unit
    the daemon gave no `uptime`: a current daemon gives every running unit one."""
    unit = {"name": "web", "state": "running", "pid": 7, "restarts": 0, "memory_bytes": None,
            "last_exit": None, "started_at": "2026-01-01T00:00:00+00:00",
            "uptime": 65.0}  # fmt: skip
    assert row(unit, None)[3] == "1m5s"
    assert any("(up 1m5s)" in line for line in detail_lines(unit, None, color=False))
    older = {k: v for k, v in unit.items() if k != "uptime"}  # the clock read when needed
    assert row(older, None)[3] not in ("-", "0s")


def test_formats() -> None:
    assert [render.size(n) for n in (None, 512, 2048, 12 << 20, 3 << 30)] == [
        "-", "512B", "2.0K", "12.0M", "3.0G"]  # fmt: skip
    assert [render.duration(s) for s in (None, 3, 2.5, 42, 303, 7500, 3 * 86400 + 4 * 3600)] == [
        "-", "3s", "2.5s", "42s", "5m3s", "2h5m", "3d4h"]  # fmt: skip


def test_unreachable_is_exit_5_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOXD_SOCKET", "/tmp/sbx-definitely-missing.sock")
    # `logs` reads the files instead (tests/unit/cli/test_logs.py)
    for argv in (("status",), ("reload",), ("start", "x")):
        result = sandboxctl(*argv)
        assert result.code == 5, (argv, result)
        assert result.err == (
            "sandboxctl: cannot reach sandboxd at /tmp/sbx-definitely-missing.sock: "
            "no such socket (is sandboxd running?)\n"
        )


def test_uptime_comes_from_the_daemons_monotonic_figure() -> None:
    """A wall-clock step moves `started_at` against now; the daemon's `uptime` does not move."""
    now = dt.datetime(2026, 1, 1, 1, 0, 5, tzinfo=dt.UTC)  # an hour past started_at + 5 s
    unit = {"name": "web", "state": "running", "pid": 7, "restarts": 0, "memory_bytes": None,
            "last_exit": None, "started_at": "2026-01-01T00:00:00+00:00",
            "uptime": 5.0}  # fmt: skip
    assert row(unit, now)[3] == "5s"
    assert any("(up 5s)" in line for line in detail_lines(unit, now, color=False))
    older = {k: v for k, v in unit.items() if k != "uptime"}  # a daemon without the field
    assert row(older, now)[3] == "1h0m"


def test_a_broken_file_is_marked_and_a_long_last_exit_cut(
    daemon: ServerThread, controller: FakeController
) -> None:
    long_exit = "launch-error:user: unknown user 'root': not in /srv/root/etc/passwd (nor uid)"
    controller.units["api"] = make_status(
        "api", last_exit=long_exit, file_invalid=True,
        error="invalid unit file (the running version is kept): api.toml: service.exec: ...",
    )  # fmt: skip
    lines = sandboxctl("status").out.splitlines()
    api = next(line for line in lines if line.startswith("api "))
    assert api.split()[1] == "running*"
    assert api.endswith("launch-error:user: unknown user 'root':…")
    assert len(api[lines[0].index("LAST-EXIT") :]) == 40
    assert lines[-1] == (
        "* unit file invalid, running the last valid version: "
        "see sandboxctl status UNIT / sandboxctl validate"
    )
    assert sum("*" in line for line in lines) == 2  # only the broken unit, and the hint
    assert f"last exit:    {long_exit}" in sandboxctl("status", "api").out
    (unit,) = json.loads(sandboxctl("status", "api", "--json").out)["units"]
    assert unit["last_exit"] == long_exit and unit["file_invalid"] is True
    del controller.units["api"]
    assert "*" not in sandboxctl("status").out  # no hint without a broken file


def test_detail_names_the_template_and_the_dropins() -> None:
    unit = {
        "name": "web@8080", "state": "running", "template": "/u/web@.toml",
        "dropins": ["/u/web@.toml.d/a.toml", "/u/web@8080.toml.d/b.toml"],
    }  # fmt: skip
    lines = detail_lines(unit, dt.datetime.now(dt.UTC), color=False)
    assert "  template:     /u/web@.toml" in lines
    assert "  drop-ins:     /u/web@.toml.d/a.toml, /u/web@8080.toml.d/b.toml" in lines
    plain = detail_lines({"name": "db", "state": "running"}, dt.datetime.now(dt.UTC), False)
    assert not any("template" in line or "drop-ins" in line for line in plain)


def test_detail_names_dependencies_both_ways() -> None:
    unit = {
        "name": "db", "state": "stopped", "requires": [], "wants": ["disk"], "after": [],
        "required_by": ["api", "web"], "wanted_by": [], "before": ["backup"],
    }  # fmt: skip
    lines = detail_lines(unit, dt.datetime.now(dt.UTC), color=False)
    assert "  wants:        disk" in lines
    assert "  required by:  api, web" in lines
    assert "  before:       backup" in lines
    assert not any(line.startswith(("  requires", "  wanted by", "  after")) for line in lines)
