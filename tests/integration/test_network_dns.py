"""DNS in bridge sandboxes, through the real launch path (test_network_launch.py's `start`).

The resolver is a tiny UDP DNS responder this test runs on the test bridge's own address in
the host's netns (reachable from the sandbox, and only from the test bridge): no real external
address is ever asked. The sandbox resolves with glibc (`socket.getaddrinfo`), as a service
would, so the sandbox's /etc/resolv.conf, nsswitch.conf and the bridge path are all exercised.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_network_bridge import Env, env
from test_network_launch import PYTHON, _subreaper, stack, start

from supervisor.linux import resolvconf
from tests.support import harness

__all__ = ["_subreaper", "env", "stack"]  # fixtures, imported for pytest
pytestmark = [*harness.LAUNCH_MARKS, pytest.mark.security]
ANSWER = "192.0.2.80"  # TEST-NET-1: never routed, only ever an answer here

# Answers A queries for names under example.internal with ANSWER, other names under it with
# no data, everything else NXDOMAIN; logs every name asked. Prints "ready" once bound.
RESPONDER = r"""
import socket, struct, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 53))
answer = socket.inet_aton(sys.argv[2])
print("ready", flush=True)
while True:
    data, peer = sock.recvfrom(512)
    ident, flags, qd = struct.unpack("!HHH", data[:6])
    pos, labels = 12, []
    while data[pos]:
        labels.append(data[pos + 1 : pos + 1 + data[pos]].decode()); pos += 1 + data[pos]
    qtype = struct.unpack("!H", data[pos + 1 : pos + 3])[0]
    question = data[12 : pos + 5]
    name = ".".join(labels).lower()
    print("asked", name, qtype, flush=True)
    ours = name.endswith("example.internal")
    rcode = 0 if ours else 3
    answers = b""
    if ours and qtype == 1:
        answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + answer
    head = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
    sock.sendto(head + question + answers, peer)
"""

RESOLVE = """
import json, socket, sys
out = {"resolv.conf": open("/etc/resolv.conf").read()}
for name in sys.argv[1:]:
    try:
        out[name] = sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET)})
    except socket.gaierror as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""


@contextlib.contextmanager
def responder(address: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [PYTHON, "-c", RESPONDER, address, ANSWER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"  # bound: blocks until then, no polling
        yield proc
    finally:
        proc.kill()  # ours, by PID
        proc.wait()


def test_a_bridge_sandbox_resolves_through_its_dns_servers(
    env: Env, stack: contextlib.ExitStack
) -> None:
    asyncio.run(env.net.ensure_bridge())  # the gateway address exists from here on
    gateway = str(env.subnet.network_address + 1)
    with responder(gateway) as dns:
        spec = harness.unit(
            [PYTHON, "-c", RESOLVE, "web.example.internal", "db", "nowhere.invalid."],
            name="resolver",
            network={"mode": "bridge", "dns": [gateway], "dns_search": ["example.internal"]},
        )
        got = json.loads(start(env, stack, spec).output())
        dns.kill()
        asked, _ = dns.communicate()
    assert f"\nnameserver {gateway}\n" in got["resolv.conf"]
    assert "\nsearch example.internal\n" in got["resolv.conf"]
    assert got["web.example.internal"] == [ANSWER]
    assert got["db"] == [ANSWER]  # through the search list: db.example.internal
    assert "Name or service not known" in got["nowhere.invalid."]  # NXDOMAIN
    assert "asked db.example.internal 1" in asked


def test_a_sandbox_root_cannot_write_the_hosts_resolv_conf(
    env: Env, stack: contextlib.ExitStack, tmp_path: Path
) -> None:
    """The attack: root in a writable host-root sandbox rewrites /etc/resolv.conf (to send
    the host's lookups to a resolver it controls). It writes its own copy, never the host's."""
    before = Path(resolvconf.HOST_RESOLV).read_bytes()
    st = os.stat(resolvconf.HOST_RESOLV)
    attack = (
        "import os\n"
        "with open('/etc/resolv.conf', 'w') as f: f.write('nameserver 203.0.113.66\\n')\n"
        "print(open('/etc/resolv.conf').read(), end='')\n"
        "os.rename('/etc/resolv.conf', '/etc/resolv.old')\n"
        "print(sorted(n for n in os.listdir('/etc') if n.startswith('resolv')))\n"
    )
    spec = harness.unit(
        [PYTHON, "-c", attack],
        name="attacker",
        network={"mode": "bridge", "dns": ["192.0.2.53"]},
        sandbox={"read_only": False},
    )
    out = start(env, stack, spec).output()
    # The write and the rename succeeded inside: the copy is the sandbox's own ...
    assert out == "nameserver 203.0.113.66\n['resolv.old']\n"
    # ... and the host's file is byte for byte and inode for inode what it was.
    after = os.stat(resolvconf.HOST_RESOLV)
    assert hashlib.sha256(Path(resolvconf.HOST_RESOLV).read_bytes()).digest() == (
        hashlib.sha256(before).digest()
    )
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        st.st_ino,
        st.st_mtime_ns,
        st.st_size,
    )
