"""In-sandbox probe: runs as the service (root = "host", so the host's /usr/bin/python3 works)
and prints one JSON object on stdout describing what it can see and do from the inside.

    python3 /probe/probe.py info            identity, namespaces' view, mounts, caps, seccomp
    python3 /probe/probe.py escape HOSTPID  the escape battery: every attempt must fail

Standard library only (it runs with the host's system Python, not the venv). An escape result
is {"escaped": bool, "detail": str}: escaped = true means the sandbox let it happen.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable

libc = ctypes.CDLL(None, use_errno=True)
NR = {"init_module": 175, "finit_module": 313, "bpf": 321, "keyctl": 250, "ptrace": 101}


def _status() -> dict[str, str]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def _mounts() -> dict[str, str]:
    found = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            found[fields[4]] = f"{fields[5]},{fields[sep + 3]}|{fields[sep + 1]}"
    return found


def _writable(path: str) -> str:
    name = os.path.join(path, ".probe-write")
    try:
        with open(name, "w") as f:
            f.write("x")
        os.unlink(name)
        return "ok"
    except OSError as err:
        return errno.errorcode.get(err.errno or 0, str(err))


def _ping_group_range() -> list[int]:
    with open("/proc/sys/net/ipv4/ping_group_range") as f:
        return [int(n) for n in f.read().split()]


def info() -> dict[str, object]:
    status = _status()
    interfaces = {}
    for name in os.listdir("/sys/class/net"):
        with open(f"/sys/class/net/{name}/flags") as f:
            interfaces[name] = bool(int(f.read(), 16) & 1)
    with open("/proc/sysvipc/msg") as f:
        msg_queues = len(f.readlines()) - 1
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "hostname": socket.gethostname(),
        "interfaces": interfaces,
        "msg_queues": msg_queues,
        # Set from outside before the service runs (stage.net_setup): ping without NET_RAW.
        "ping_group_range": _ping_group_range(),
        "caps": {k: int(status[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
        "no_new_privs": int(status["NoNewPrivs"]),
        "seccomp": int(status["Seccomp"]),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": sorted(os.getgroups()),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "root": sorted(os.listdir("/")),
        "etc": sorted(os.listdir("/etc")),
        "dev": sorted(os.listdir("/dev")),
        "mounts": _mounts(),
        "writable": {p: _writable(p) for p in ("/", "/usr", "/etc", "/tmp", "/run", "/dev/shm")},
        # /dev/shm's mode, and whether it is on /dev's filesystem (a directory of it).
        "shm": [
            stat.S_IMODE(os.stat("/dev/shm").st_mode),
            os.stat("/dev/shm").st_dev == os.stat("/dev").st_dev,
        ],
        "masked_dirs": {
            p: [os.stat(p).st_dev, os.listdir(p), _writable(p)]
            for p in ("/proc/acpi", "/sys/firmware")
            if os.path.isdir(p)
        },
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "core": list(resource.getrlimit(resource.RLIMIT_CORE)),
        "stdin_is_null": os.path.samestat(os.fstat(0), os.stat("/dev/null")),
        "open_fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
    }


def _attempt(fn: Callable[[], object]) -> dict[str, object]:
    try:
        result = fn()
    except OSError as err:
        return {"escaped": False, "detail": errno.errorcode.get(err.errno or 0, str(err))}
    if result is False or result is None or result == b"":
        return {"escaped": False, "detail": repr(result)}
    return {"escaped": True, "detail": repr(result)[:200]}


def _check(res: int) -> bool:
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return True


def _mount() -> bool:
    return _check(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None))


def _module() -> bool:
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        return _check(libc.syscall(NR["finit_module"], fd, b"", 0))
    finally:
        os.close(fd)


def _sysrq() -> bool:
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("h")
    return True


def _kcore() -> bytes:
    with open("/proc/kcore", "rb") as f:
        return f.read(16)


def _usable_node(path: str, kind: int, dev: int) -> bool:
    # Escaped only if the node can be created *and* opened: without seccomp, CAP_MKNOD may
    # create one, but every writable mount is nodev (and the devices cgroup refuses it).
    os.mknod(path, kind | 0o600, dev)
    os.close(os.open(path, os.O_RDONLY))
    return True


def _mknod() -> bool:
    return _usable_node("/tmp/sda", stat.S_IFBLK, os.makedev(8, 0))


def _mknod_mem() -> bool:
    return _usable_node("/dev/shm/mem", stat.S_IFCHR, os.makedev(1, 1))


def _clock() -> bool:
    time.clock_settime(time.CLOCK_REALTIME, time.clock_gettime(time.CLOCK_REALTIME))
    return True


def _see_host_pid(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _signal_host_pid(pid: int) -> bool:
    os.kill(pid, 0)
    return True


def _shadow() -> bytes:
    with open("/etc/shadow", "rb") as f:
        return f.read(16)


def _new_interface() -> str | None:
    proc = subprocess.run(
        ["/usr/sbin/ip", "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise OSError(errno.EPERM, proc.stderr.strip())
    return "created"


def _reach_outside() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("8.8.8.8", 53))
        s.send(b"x")
    return True


def _userns() -> bool:
    return _check(libc.unshare(0x10000000))


def _ptrace() -> bool:
    return _check(libc.syscall(NR["ptrace"], 0, 0, 0, 0))


def _bpf() -> bool:
    return _check(libc.syscall(NR["bpf"], 0, 0, 0))


def _keyctl() -> bool:
    return _check(libc.syscall(NR["keyctl"], 0, -3, 0))  # KEYCTL_GET_KEYRING_ID, session


def _host_dirs() -> list[str] | None:
    seen = [
        p for p in ("/home", "/root", "/var/lib", "/run/sandboxd", "/work") if os.path.exists(p)
    ]
    return seen or None


def _write_shared_etc() -> bool:
    # The /etc every read-only sandbox shares (one read-only snapshot, the host's directories
    # bound over it): writing one of its files would change what every other sandbox reads.
    for path in ("/etc/passwd", "/etc/ld.so.cache", "/etc/services", "/etc/hostname"):
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    return True


def _unmount_shared_etc() -> bool:
    # Unmounting it would uncover the root tmpfs, and a remount could make it writable.
    if libc.mount(None, b"/etc", None, 0x20 | 0x1000, None) == 0:  # MS_REMOUNT | MS_BIND
        return True
    return _check(libc.umount2(b"/etc", 0))


def escape(host_pid: int) -> dict[str, object]:
    return {
        "mount": _attempt(_mount),
        "load_module": _attempt(_module),
        "sysrq_trigger": _attempt(_sysrq),
        "read_kcore": _attempt(_kcore),
        "mknod_block": _attempt(_mknod),
        "mknod_mem": _attempt(_mknod_mem),
        "set_clock": _attempt(_clock),
        "see_host_pid": _attempt(lambda: _see_host_pid(host_pid)),
        "signal_host_pid": _attempt(lambda: _signal_host_pid(host_pid)),
        "read_shadow": _attempt(_shadow),
        "new_interface": _attempt(_new_interface),
        "reach_outside": _attempt(_reach_outside),
        "user_namespace": _attempt(_userns),
        "ptrace": _attempt(_ptrace),
        "bpf": _attempt(_bpf),
        "keyctl": _attempt(_keyctl),
        "host_dirs": _attempt(_host_dirs),
        "write_shared_etc": _attempt(_write_shared_etc),
        "unmount_shared_etc": _attempt(_unmount_shared_etc),
    }


def main() -> None:
    what = sys.argv[1]
    result = info() if what == "info" else escape(int(sys.argv[2]))
    json.dump(result, sys.stdout)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
