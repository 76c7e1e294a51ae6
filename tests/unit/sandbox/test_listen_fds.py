"""Socket activation in the launch plan: fds 3.. for the sockets, the other kept fds moved out
of their way, and sd_listen_fds(3)'s variables."""

from __future__ import annotations

import dataclasses
import os

from supervisor.linux.syscalls import CLONE_NEWNET, CLONE_NEWUSER
from supervisor.sandbox.child.stage import listen_env
from supervisor.sandbox.host.launch import LaunchRequest, build_plan, fd_targets
from supervisor.sandbox.wire.mounts import Mount
from supervisor.sandbox.wire.plancodec import decode_plan, encode_plan
from supervisor.unit.loader import parse_unit


def request(listen: tuple[tuple[int, str], ...]) -> LaunchRequest:
    spec = parse_unit("/u/web.toml", "web", b'[service]\nexec = ["/bin/true"]\n')
    return LaunchRequest(spec, [], 1, 1, listen_fds=listen, id_map=(0, 1 << 20, 65536))


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


def test_a_held_netns_is_joined_not_made() -> None:
    text = (
        b'[service]\nexec = ["/bin/true"]\n[sandbox]\nnamespaces = ["mount", "pid", "net", "user"]'
    )
    spec = parse_unit("/u/web.toml", "web", text)
    ids = (0, 1 << 20, 65536)  # the unit's user-namespace range
    fresh = build_plan(LaunchRequest(spec, [], 1, 1, id_map=ids))
    held = build_plan(LaunchRequest(spec, [], 1, 1, netns="/run/sandboxd/netns/web", id_map=ids))
    assert fresh.clone_flags & CLONE_NEWNET and fresh.loopback and fresh.sysctls
    assert fresh.netns is None and any(isinstance(op, Mount) and op.fstype == "sysfs"
                                       for op in fresh.root_ops)  # fmt: skip
    # Joined by the launcher; lo, ping_group_range were set once by the daemon; no sysfs: a
    # user namespace does not own the daemon's netns.
    assert held.netns == "/run/sandboxd/netns/web"
    assert not held.clone_flags & CLONE_NEWNET and held.clone_flags & CLONE_NEWUSER
    assert not held.loopback and held.sysctls == ()
    assert not any(isinstance(op, Mount) and op.fstype == "sysfs" for op in held.root_ops)
    assert decode_plan(encode_plan(held)) == held
