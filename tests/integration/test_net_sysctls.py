"""The daemon's own network sysctls on the real kernel, as root: a held network namespace's
ping_group_range and a NAT table's ip_forward and route_localnet are written through a procfs
instance of their own (linux/procsys.py), not the host's /proc/sys, and land in the network
namespace of the writer at the write, nowhere else.

What a lookup under the host's /proc/sys/net costs with thousands of namespaces alive is not
timed here (no wall-clock assertions): procsys.py's doc gives the measurement.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import tempfile
from pathlib import Path

from supervisor.linux import heldnetns, procsys
from supervisor.linux.syscalls import CLONE_NEWNET, REAL
from supervisor.sandbox.host.nat import UnitNat
from supervisor.sandbox.host.nattable import NatTable
from supervisor.unit.ports import parse_published_port

PING = "/proc/sys/net/ipv4/ping_group_range"


def test_the_instance_is_not_the_hosts_and_is_mounted_nowhere() -> None:
    with open("/proc/self/mountinfo") as f:
        before = f.read()
    with procsys.opened() as proc_sys:
        assert os.fstat(proc_sys).st_dev != os.stat("/proc/sys").st_dev
        with open("/proc/self/mountinfo") as f:
            assert f.read() == before
        fd = proc_sys
    try:  # closed by the context
        os.fstat(fd)
        raise AssertionError(f"fd {fd} still open")
    except OSError:
        pass


def test_a_held_namespace_gets_its_ping_group_range_and_the_host_keeps_its_own() -> None:
    with open(PING) as f:
        host_range = f.read()
    with tempfile.TemporaryDirectory(prefix="sbx-net-sysctls-") as tmp:
        path = heldnetns.path_for(tmp, "unit")
        heldnetns.create(path)
        try:
            with heldnetns.inside(path), open(PING) as f:
                inside = f.read().split()
        finally:
            assert heldnetns.drop(path)
    assert inside == heldnetns.PING_GROUP_RANGE.decode().split()
    with open(PING) as f:
        assert f.read() == host_range


def _in_new_netns(body: str) -> None:
    """Run `body` (a module-level function's name) in a child of ours that unshared a network
    namespace of its own: what it sets dies with the child, the host's are never touched."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            REAL.unshare(CLONE_NEWNET)
            code = globals()[body]()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _nat_sysctls_child() -> int:
    # A new namespace's ip_forward is the host's (devconf_inherit_init_net 0 copies ipv4's):
    # put it at 0 here, in ours; a new link's route_localnet starts at 0.
    subprocess.run(["ip", "link", "add", "sbxtsys0", "type", "bridge"], check=True)
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    localnet = Path("/proc/sys/net/ipv4/conf/sbxtsys0/route_localnet")
    forward.write_text("0")
    if (forward.read_text(), localnet.read_text()) != ("0\n", "0\n"):
        return 2
    with tempfile.TemporaryDirectory(prefix="sbx-net-sysctls-") as tmp:
        table = NatTable("sbxtsys0", "10.201.250.0/24", Path(tmp))
        entry = UnitNat(
            unit="web",
            chain="web",
            ip=ipaddress.IPv4Address("10.201.250.2"),
            outbound=True,
            ports=(parse_published_port("8080:80"),),
        )
        table._sysctls(entry)
        table._sysctls(entry)  # set already: read, not written again
    return 0 if (forward.read_text(), localnet.read_text()) == ("1\n", "1\n") else 3


def test_a_nat_tables_sysctls_are_set_in_the_writers_namespace() -> None:
    _in_new_netns("_nat_sysctls_child")
