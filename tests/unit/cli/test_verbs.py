from __future__ import annotations

import datetime as dt
import json
import os
import stat
import threading
from pathlib import Path

import pytest
from cli_helpers import sandboxctl

from supervisor.api.testing import FakeController, ServerThread
from supervisor.cli.main import COMMANDS, main
from supervisor.engine.model import ReloadResult, UnitEvent
from tests.support.waiting import wait_for


def test_actions(daemon: ServerThread, controller: FakeController) -> None:
    result = sandboxctl("stop", "web", "cron")
    assert (result.code, result.out) == (0, "web: stopped\ncron: stopped\n")
    result = sandboxctl("start", "web")
    assert (result.code, result.out) == (0, "web: running\n")
    assert sandboxctl("restart", "web").code == 0
    assert controller.calls == [("stop", "web"), ("stop", "cron"), ("start", "web"),
                                ("restart", "web")]  # fmt: skip


def test_actions_json(daemon: ServerThread, controller: FakeController) -> None:
    controller.fail.add("web")
    result = sandboxctl("start", "web", "cron", "--json")
    assert result.code == 1
    assert result.err == "sandboxctl: web: start failed: web: launch failed\n"
    units = json.loads(result.out)["units"]
    assert [(u["name"], u["ok"], u["state"], u["error"]) for u in units] == [
        ("web", False, None, "web: launch failed"),
        ("cron", True, "running", None),
    ]
    assert units[1]["unit"]["name"] == "cron" and units[0]["unit"] is None
    result = sandboxctl("stop", "cron", "--json")
    assert result.code == 0 and json.loads(result.out)["units"][0]["state"] == "stopped"
    assert len(result.out.splitlines()) == 1  # one object, nothing else on stdout


def test_actions_json_unknown_unit(daemon: ServerThread, controller: FakeController) -> None:
    result = sandboxctl("restart", "web", "ghost", "--json")
    assert result.code == 4 and result.err == "sandboxctl: no such unit: ghost\n"
    assert json.loads(result.out) == {
        "units": [{"name": "ghost", "ok": False, "state": None, "error": "no such unit",
                   "unit": None}]
    }  # fmt: skip
    assert controller.calls == []


def test_unknown_unit_acts_on_nothing(daemon: ServerThread, controller: FakeController) -> None:
    result = sandboxctl("stop", "web", "ghost")
    assert result.code == 4 and result.err == "sandboxctl: no such unit: ghost\n"
    assert controller.calls == []


def test_failed_start_is_exit_1(daemon: ServerThread, controller: FakeController) -> None:
    controller.fail.add("web")
    result = sandboxctl("start", "web", "cron")
    assert result.code == 1
    assert result.err == "sandboxctl: web: start failed: web: launch failed\n"
    assert result.out == "cron: running\n"


def test_reload_report_and_exit(daemon: ServerThread, controller: FakeController) -> None:
    result = sandboxctl("reload")
    assert (result.code, result.out) == (0, "nothing changed\n")
    controller.reload_result = ReloadResult(
        started=["a", "b"], restarted=["c"], stopped=["d"], removed=["broken"],
        fixed=["web"], invalid={"bad": ["bad.toml: service.exec: field required"]},
    )  # fmt: skip
    result = sandboxctl("reload", "--no-wait")
    assert result.code == 1
    assert result.out == (
        "started: a, b\nrestarted: c\nstopped: d\nremoved: broken\n"
        "valid again, no change: web\ninvalid: bad\n  bad.toml: service.exec: field required\n"
    )


def _event(unit: str, name: str, state: str, **detail: object) -> UnitEvent:
    return UnitEvent(unit, name, dt.datetime.now(dt.UTC), state, dict(detail))


def test_reload_waits_for_what_it_started(daemon: ServerThread, controller: FakeController) -> None:
    # Before the reload: a crash loop's last backoff, which must not count as an outcome.
    daemon.call(_publish(controller, _event("c", "backoff", "backoff", reason="exit-code:1")))
    controller.reload_result = ReloadResult(started=["a", "b", "n"], restarted=["c"])
    controller.reload_events = [
        _event("a", "started", "running"),
        _event("n", "started", "starting"),
        _event("c", "stopping", "stopping"),
        _event("b", "failed", "failed", reason="launch-error:user: unknown user 'x'"),
        _event("c", "exited", "stopped", reason="signal:SIGTERM"),
        _event("c", "stopped", "stopped"),
        _event("c", "started", "running"),
        _event("n", "ready", "running"),
    ]
    result = sandboxctl("reload")
    assert result.code == 1, result
    assert result.out == (
        "started: a, b, n\nrestarted: c\n"
        "a: running\nb: failed: launch-error:user: unknown user 'x'\nc: running\n"
        "n: running (ready)\n"
    )
    controller.reload_events = [_event(n, "started", "running") for n in ("a", "b", "n", "c")]
    result = sandboxctl("reload", "--json")
    assert result.code == 0, result
    answer = json.loads(result.out)
    assert answer["started"] == ["a", "b", "n"] and answer["seq"] > 0
    assert {n: (o["state"], o["ok"]) for n, o in answer["outcomes"].items()} == {
        n: ("running", True) for n in ("a", "b", "c", "n")
    }
    assert answer["outcomes"]["a"]["event"]["event"] == "started"


def test_reload_backoff_after_a_failure_and_never_settling_fail(
    daemon: ServerThread, controller: FakeController
) -> None:
    controller.reload_result = ReloadResult(started=["loop", "slow", "job", "always"])
    controller.reload_events = [
        _event("loop", "exited", "backoff", reason="exit-code:2"),
        _event("loop", "backoff", "backoff", reason="exit-code:2", delay=0.1),
        _event("always", "backoff", "backoff", reason="exit-code:0", delay=1),
        _event("job", "exited", "exited", reason="exit-code:0"),
        _event("slow", "waiting", "starting", reason="waiting for db (not running)"),
    ]
    result = sandboxctl("reload", "--timeout", "0.5")
    assert result.code == 1, result
    assert result.out.splitlines()[1:] == [
        "always: backoff: restarting in 1s after exit-code:0",
        "job: exited: exit-code:0",
        "loop: backoff: restarting in 0.1s after exit-code:2",
        "slow: not settled within 0.5s (starting after waiting: waiting for db (not running))",
    ]
    no_wait = sandboxctl("reload", "--no-wait", "--json")
    assert no_wait.code == 0 and json.loads(no_wait.out)["outcomes"] == {}
    assert sandboxctl("reload", "--timeout", "0").code == 2


async def _publish(controller: FakeController, event: UnitEvent) -> None:
    controller.publish(event)


def test_logs(daemon: ServerThread, controller: FakeController) -> None:
    (controller.log_dir / "web.log").write_text("one\ntwo\nthree\n")
    assert sandboxctl("logs", "web").out == "one\ntwo\nthree\n"
    assert sandboxctl("logs", "web", "-n", "1").out == "three\n"
    assert sandboxctl("logs", "ghost").code == 4
    assert sandboxctl("logs", "web", "-n", "x").code == 2


def test_logs_follow(daemon: ServerThread, controller: FakeController) -> None:
    log = controller.log_dir / "web.log"
    log.write_text("first run\n")

    def follower_has_open(path: Path) -> bool:
        """The server (a thread of this process) holds `path`'s current file open."""
        inode = path.stat().st_ino
        return any(os.stat(fd).st_ino == inode for fd in _fds_of_regular_files())

    def follower_read_all(path: Path) -> bool:
        """The server's descriptor of `path` is at its end: it has read (and, in the same
        step, sent) everything in it."""
        inode, size = path.stat().st_ino, path.stat().st_size
        for fd in _fds_of_regular_files():
            if os.stat(fd).st_ino == inode:
                fdinfo = Path(fd.replace("/fd/", "/fdinfo/")).read_text()
                if int(fdinfo.split()[1]) == size:  # "pos:\t<offset>" is the first line
                    return True
        return False

    def later() -> None:
        wait_for(lambda: follower_has_open(log))
        log.rename(log.with_suffix(".log.1"))
        log.write_text("second run\n")
        wait_for(lambda: follower_read_all(log))
        daemon.call(daemon_close_streams(daemon))

    threading.Thread(target=later).start()
    result = sandboxctl("logs", "web", "-f")
    assert result.out == "first run\nsecond run\n"


def _fds_of_regular_files() -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        path = f"/proc/self/fd/{fd}"
        try:
            if stat.S_ISREG(os.stat(path).st_mode):
                found.append(path)
        except OSError:
            continue
    return found


async def daemon_close_streams(daemon: ServerThread) -> None:
    """End every open stream, as a daemon shutdown does."""
    server = daemon._server
    assert server is not None
    await server.close()


def test_usage_errors_are_exit_2(daemon: ServerThread) -> None:
    assert sandboxctl("stop").code == 2
    assert sandboxctl("frobnicate").code == 2
    assert sandboxctl("status", "--bogus").code == 2


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    # Every verb there is, through the real entry point: `top --help` once crashed on a % in
    # its help text.
    for verb in COMMANDS:
        code = main([verb, "--help"])
        out = capsys.readouterr().out
        assert code == 0 and "EXAMPLE:" in out, verb
