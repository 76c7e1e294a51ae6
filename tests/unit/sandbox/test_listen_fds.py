"""Socket activation in the launch plan: fds 3.. for the sockets, the other kept fds moved out
of their way, and sd_listen_fds(3)'s variables."""

from __future__ import annotations

import dataclasses
import os

from supervisor.sandbox.child.stage import listen_env
from supervisor.sandbox.host.launch import LaunchRequest, build_plan, fd_targets
from supervisor.unit.loader import parse_unit


def request(listen: tuple[tuple[int, str], ...]) -> LaunchRequest:
    spec = parse_unit("/u/web.toml", "web", b'[service]\nexec = ["/bin/true"]\n')
    return LaunchRequest(spec, [], 1, 1, listen_fds=listen)


def test_sockets_take_3_and_up_and_kept_fds_move_out_of_the_way() -> None:
    sources, targets = fd_targets(request(((40, "a"), (41, "b"))), (3, 9))
    assert sources == (3, 9, 40, 41)
    assert targets == (5, 9, 3, 4)
    assert fd_targets(request(()), (7,)) == ((7,), (7,))


def test_listen_env() -> None:
    req = dataclasses.replace(request(()), keep_fds=())
    plan = dataclasses.replace(build_plan(req), listen_names=("web", "ctl"))
    env = listen_env(plan)
    assert env == {"LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:ctl", "LISTEN_PID": str(os.getpid())}
    assert listen_env(dataclasses.replace(plan, listen_names=())) == {}
    behind_tini = listen_env(dataclasses.replace(plan, exec_path="/dev/init"))
    assert "LISTEN_PID" not in behind_tini  # not PID 1 of a namespace here: unknown
