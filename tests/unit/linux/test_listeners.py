"""The host's listening sockets (linux/listeners.py) and the validation error they give a unit
that would publish the same port."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from supervisor.linux import listeners
from supervisor.unit.loader import UnitLoader


def test_a_tcp_listener_and_a_bound_udp_socket_are_seen_with_their_owner() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp,
    ):
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp.bind(("::", 0))  # dual stack: takes IPv4 too
        tcp_port, udp_port = tcp.getsockname()[1], udp.getsockname()[1]
        found = {(s.protocol, s.address, s.port): s for s in listeners.listening()}
        assert ("tcp", "127.0.0.1", tcp_port) in found
        assert ("udp", None, udp_port) in found
        inode = os.fstat(tcp.fileno()).st_ino
        assert found["tcp", "127.0.0.1", tcp_port].inode == inode
        comm = Path("/proc/self/comm").read_text().strip()
        assert listeners.owner(inode) == f"{comm} (pid {os.getpid()})"


def test_a_port_a_host_process_listens_on_is_refused_naming_the_process(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        (tmp_path / "web.toml").write_text(
            f'[service]\nexec = ["/bin/true"]\n[network]\nmode = "bridge"\nports = ["{port}:80"]\n'
        )
        load = UnitLoader(host_checks=True).load_directory(tmp_path)
        comm = Path("/proc/self/comm").read_text().strip()
        (error,) = load.errors["web"]
        assert error.key == "network.ports[0]"
        assert error.message == (
            f"{port}:80/tcp: {comm} (pid {os.getpid()}) listens on 127.0.0.1:{port}/tcp"
        )
        # Offline validation does not look at this host.
        assert "web" in UnitLoader(host_checks=False).load_directory(tmp_path).specs
