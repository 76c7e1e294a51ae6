"""A real 3-member etcd cluster on 127.0.0.1 for the fleet tests.

Every member gets a free client and peer port picked at runtime (so two test runs, or another
engineer's tests, never collide) and its own temporary data dir. `stop_member` kills one member
by its PID (SIGKILL: a crash, not a clean leave) and `start_member` brings it back on the same
ports and data, as a restarted host would. `close` kills whatever is still running, by PID, and
removes the data dirs: no stray etcd process or directory is left.

Imported by name (`from tests.support.etcd_cluster import EtcdCluster`); the `etcd_cluster`
fixture in tests/integration/test_fleet.py wraps it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.waiting import wait_for

ETCD = "etcd"
ETCDCTL = "etcdctl"
START_TIMEOUT = 60.0


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free now; held open together so no two are the same."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def available() -> bool:
    return shutil.which(ETCD) is not None and shutil.which(ETCDCTL) is not None


def make_certs(directory: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, with openssl."""
    directory.mkdir(parents=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca-key.pem", "-out", "ca.pem")  # fmt: skip
    # The members' certificate must allow clientAuth too: etcd's JSON gateway dials the
    # member's own gRPC server with it (with --client-cert-auth it is refused otherwise, and
    # every gateway request fails with "connection closed").
    server = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"
    for name, ext in (("server", server),
                      ("client", "extendedKeyUsage=clientAuth")):  # fmt: skip
        (directory / f"{name}.ext").write_text(ext + "\n")
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}-key.pem", "-out", f"{name}.csr")  # fmt: skip
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
            "-out", f"{name}.pem")  # fmt: skip


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    scheme: str = "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class EtcdCluster:
    size: int = 3
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sbxd-etcd-")))
    members: list[Member] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)  # for every member (bench_fleet)
    # Clients over TLS with client certificates (make_certs' files); peers stay plain.
    tls: bool = False

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.size)
        for i in range(self.size):
            name = f"m{i}"
            self.members.append(
                Member(
                    name,
                    ports[2 * i],
                    ports[2 * i + 1],
                    self.base / name,
                    self.base / f"{name}.log",
                )
            )
        if self.tls:
            make_certs(self.base / "tls")
            for m in self.members:
                m.scheme = "https"
            self.extra_args += [
                "--cert-file", str(self.base / "tls" / "server.pem"),
                "--key-file", str(self.base / "tls" / "server-key.pem"),
                "--trusted-ca-file", str(self.base / "tls" / "ca.pem"), "--client-cert-auth",
            ]  # fmt: skip
        self._initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        self._token = f"sbxd-{self.base.name}"

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    # -- processes ---------------------------------------------------------------------

    def start(self) -> None:
        for member in self.members:
            self._spawn(member)
        self.wait_healthy()

    def _spawn(self, m: Member) -> None:
        assert not m.running
        argv = [
            ETCD, "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", self._initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", self._token,
            # Fast elections: a killed leader is replaced within a second or two.
            "--heartbeat-interval", "100", "--election-timeout", "1000", *self.extra_args,
        ]  # fmt: skip
        with open(m.log_path, "ab") as log:
            m.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )

    def stop_member(self, m: Member) -> None:
        """SIGKILL one member by its PID and reap it."""
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(30)

    def start_member(self, m: Member) -> None:
        self._spawn(m)
        wait_for(lambda: self._healthy(m), START_TIMEOUT, lambda: self._tail(m))

    def stop_all(self) -> None:
        for m in self.members:
            self.stop_member(m)

    def start_all(self) -> None:
        for m in self.members:
            if not m.running:
                self._spawn(m)
        self.wait_healthy()

    def close(self) -> None:
        self.stop_all()
        shutil.rmtree(self.base, ignore_errors=True)

    # -- questions ---------------------------------------------------------------------

    def etcdctl(self, *args: str, endpoints: list[str] | None = None, stdin: bytes = b"") -> str:
        eps = ",".join(endpoints or [m.client_url for m in self.members if m.running])
        done = subprocess.run(
            [ETCDCTL, "--endpoints", eps, "--dial-timeout", "2s", "--command-timeout", "5s",
             *self.client_tls_args(), *args],
            check=False, capture_output=True, input=stdin,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)}: {done.stderr.decode().strip()}")
        return done.stdout.decode()

    def client_tls(self) -> dict[str, str]:
        """The files a client needs (ca, cert, key), by [cluster] key; {} without TLS."""
        d = self.base / "tls"
        if not self.tls:
            return {}
        return {"ca": str(d / "ca.pem"), "cert": str(d / "client.pem"),
                "key": str(d / "client-key.pem")}  # fmt: skip

    def client_tls_args(self) -> list[str]:
        files = self.client_tls()
        if not files:
            return []
        return ["--cacert", files["ca"], "--cert", files["cert"], "--key", files["key"]]

    def _healthy(self, m: Member) -> bool:
        if not m.running:
            return False
        with contextlib.suppress(RuntimeError):
            self.etcdctl("endpoint", "health", endpoints=[m.client_url])
            return True
        return False

    def wait_healthy(self) -> None:
        for m in self.members:
            wait_for(lambda m=m: self._healthy(m), START_TIMEOUT, lambda m=m: self._tail(m))

    def _tail(self, m: Member) -> str:
        try:
            return f"{m.name} not healthy; log tail:\n" + m.log_path.read_text()[-2000:]
        except OSError:
            return f"{m.name} not healthy (no log)"

    def leader(self) -> Member:
        """The member that is leader now (`etcdctl endpoint status -w json`)."""
        running = [m for m in self.members if m.running]
        status = json.loads(
            self.etcdctl(
                "endpoint", "status", "-w", "json", endpoints=[m.client_url for m in running]
            )
        )
        for entry in status:
            header = entry["Status"]["header"]
            if header["member_id"] == entry["Status"]["leader"]:
                return next(m for m in running if m.client_url == entry["Endpoint"])
        raise RuntimeError(f"no leader among {status}")

    def wait_leader(self, other_than: Member | None = None) -> Member:
        """The leader, once the running members have elected one (other than `other_than`)."""
        found: list[Member] = []

        def elected() -> bool:
            with contextlib.suppress(RuntimeError, StopIteration, ValueError, KeyError):
                leader = self.leader()
                if leader is not other_than:
                    found.append(leader)
                    return True
            return False

        wait_for(elected, START_TIMEOUT, lambda: "no leader elected")
        return found[-1]

    def put(self, key: str, value: str | bytes) -> None:
        """The value on stdin: any bytes, of any size (an argument could be neither)."""
        self.etcdctl("put", key, stdin=value.encode() if isinstance(value, str) else value)

    def delete(self, key: str) -> None:
        self.etcdctl("del", key)

    def get_prefix(self, prefix: str) -> dict[str, str]:
        out = json.loads(self.etcdctl("get", "--prefix", prefix, "-w", "json"))
        return {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode(
                errors="replace"
            )
            for kv in out.get("kvs", [])
        }
