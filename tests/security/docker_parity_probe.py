"""In-sandbox probe: what Docker's default profile refuses, tried from inside a sandbox.

    python3 /probe/docker_parity_probe.py syscalls        every refused syscall, by number
    python3 /probe/docker_parity_probe.py paths JSON      masked and read-only paths, and
                                                          attempts to undo them

Runs as the service, with the host's system python3 (standard library only), and prints one
JSON object on its last line. Each syscall is called with arguments that fail harmlessly even
where nothing refuses it (NULL or invalid pointers, invalid fds, invalid flags, bad magic),
so its answer tells a filter's refusal (EPERM, or ENOSYS for clone3) from the kernel's own
(EFAULT, EBADF, EINVAL, ...). The "syscalls" mode also runs without the filter and with every
capability (the control that shows those arguments reach the kernel and do nothing); "paths"
mode mounts and unmounts, so it only runs under the filter.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import resource
import signal
import sys

from docker_denied_syscalls import DENIED, ENOSYS, NR, SOCKET_REFUSED_FAMILIES

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
BAD = 1  # a pointer below mmap_min_addr: never mapped, so copying from it is EFAULT
CLONE_THREAD = 0x10000  # without CLONE_SIGHAND: EINVAL before clone creates anything
CLONE_NAMESPACES = {
    "NEWNS": 0x20000, "NEWCGROUP": 0x2000000, "NEWUTS": 0x4000000, "NEWIPC": 0x8000000,
    "NEWUSER": 0x10000000, "NEWPID": 0x20000000, "NEWNET": 0x40000000,
}  # fmt: skip

# Arguments per syscall (x86_64 order), each chosen to fail early and change nothing if the
# call reaches the kernel, even with every capability; the comment is that kernel answer.
ARGS: dict[str, tuple[int, ...]] = {
    "_sysctl": (BAD,),  # ENOSYS: gone from the kernel
    "acct": (BAD,),  # EFAULT (NULL would switch accounting off)
    "add_key": (0, 0, 0, 0, 0),  # EFAULT: no key type
    "afs_syscall": (),  # ENOSYS: reserved number
    "bpf": (0x7FFF, 0, 0),  # EINVAL: no such command
    "clock_settime": (1, 0),  # EINVAL: CLOCK_MONOTONIC cannot be set
    "create_module": (),  # ENOSYS
    "delete_module": (BAD, 0),  # EFAULT: no name
    "fanotify_init": (0x80000000, 0),  # EINVAL: unknown flag
    "file_getattr": (-1, 0, 0, 0, 0),  # EINVAL: attribute size 0
    "file_setattr": (-1, 0, 0, 0, 0),  # EINVAL: attribute size 0
    "finit_module": (-1, 0, 0),  # EBADF
    "fsconfig": (-1, 0, 0, 0, 0),  # EINVAL: no fs context
    "fsmount": (-1, 0, 0),  # EBADF
    "fsopen": (0, 0x80000000),  # EINVAL: unknown flag
    "fspick": (-1, 0, 0x80000000),  # EINVAL: unknown flag
    "get_kernel_syms": (),  # ENOSYS
    "get_mempolicy": (0, 0, 0, 0, 0x80000000),  # EINVAL: unknown flag
    "getpmsg": (),  # ENOSYS: reserved number
    "init_module": (0, 0, 0),  # ENOEXEC: an image of 0 bytes
    "io_uring_enter": (-2, 0, 0, 0, 0, 0),  # EBADF
    "io_uring_register": (-2, 0, 0, 0),  # EBADF (-1 would be a ring-less registration)
    "io_uring_setup": (0, 0),  # EFAULT: no parameters
    "ioperm": (0x10000, 1, 0),  # EINVAL: past the last port
    "iopl": (4,),  # EINVAL: levels are 0-3
    "kcmp": (0, 0, 0, 0, 0),  # ESRCH: no process 0
    "kexec_file_load": (-1, -1, 0, 0, 0x80000000),  # EINVAL: unknown flag (1 would unload)
    "kexec_load": (0, 1000, 0, 0),  # EINVAL: too many segments (0 would unload)
    "keyctl": (0x7FFF, 0, 0, 0, 0),  # EOPNOTSUPP: no such operation
    "listns": (0, 0, 0, 1),  # ENOSYS before Linux 6.19, else EINVAL: unknown flag
    "lookup_dcookie": (0, 0, 0),  # ENOSYS: gone from the kernel
    "lsm_get_self_attr": (0, 0, 0, 0),  # EINVAL or EFAULT: no attribute, no buffer
    "lsm_list_modules": (0, 0, 1),  # EINVAL: unknown flag
    "lsm_set_self_attr": (0, 0, 0, 1),  # EINVAL: unknown flag
    "mbind": (0, 0, 100, 0, 0, 0),  # EINVAL: no such policy
    "migrate_pages": (0x3FFFFFFF, 0, 0, 0),  # ESRCH: above any pid_max
    "mount": (0, 0, 0, 0, 0),  # EFAULT: no target
    "mount_setattr": (-1, 0, 0, 0, 0),  # EINVAL: attribute size 0
    "move_mount": (-1, 0, -1, 0, 0x80000000),  # EINVAL: unknown flag
    "move_pages": (0, 0, 0, 0, 0, 1),  # EINVAL: MPOL_MF_STRICT is not a move flag
    "nfsservctl": (),  # ENOSYS
    "open_by_handle_at": (-1, 0, 0),  # EFAULT: no handle
    "open_tree": (-1, 0, 0),  # EFAULT: no path
    "open_tree_attr": (-1, 0, 0, 0, 0),  # EFAULT: no path
    "perf_event_open": (0, 0, -1, -1, 0),  # EFAULT: no attributes
    "pidfd_getfd": (-1, 0, 0),  # EBADF
    "pivot_root": (0, 0),  # EFAULT: no paths
    "process_madvise": (-1, 0, 0, 0, 1),  # EINVAL: unknown flag
    "putpmsg": (),  # ENOSYS: reserved number
    "query_module": (),  # ENOSYS
    "quotactl": (0xFF, 0, 0, 0),  # EINVAL: quota type 255
    "quotactl_fd": (-1, 0xFF, 0, 0),  # EBADF or EINVAL
    "reboot": (0, 0, 0, 0),  # EINVAL: wrong magic
    "request_key": (0, 0, 0, 0),  # EFAULT: no key type
    "security": (),  # ENOSYS: reserved number
    "set_mempolicy": (100, 0, 0),  # EINVAL: no such policy
    "set_mempolicy_home_node": (0, 0, 0, 1),  # EINVAL: unknown flag
    "setdomainname": (0, -1),  # EINVAL: negative length (0 would set it empty)
    "sethostname": (0, -1),  # EINVAL: negative length
    "setns": (-1, 0),  # EBADF
    "settimeofday": (BAD, 0),  # EFAULT (NULL, NULL would succeed doing nothing)
    "swapoff": (BAD,),  # EFAULT
    "swapon": (BAD, 0x80000000),  # EINVAL: unknown flag
    "sysfs": (99, 0, 0),  # EINVAL: no such option
    "syslog": (9999, 0, 0),  # EINVAL: no such action
    "tuxcall": (),  # ENOSYS: reserved number
    "umount2": (0, 0x80000000),  # EINVAL: unknown flag
    "unshare": (0x1,),  # EINVAL: not an unshare flag
    "uprobe": (),  # ENXIO: only a uprobe trampoline may call it
    "uselib": (BAD,),  # EFAULT, or ENOSYS where the kernel has no uselib
    "userfaultfd": (0x2,),  # EINVAL: unknown flag (0x1 is UFFD_USER_MODE_ONLY)
    "ustat": (0, 0),  # EINVAL: no device 0
    "vhangup": (),  # 0, doing nothing, for a process without a controlling terminal
    "vserver": (),  # ENOSYS: reserved number
}
# Calls that would return a new fd if they succeeded: close it.
MAKES_FD = {
    "bpf", "fanotify_init", "fsmount", "fsopen", "fspick", "io_uring_setup", "open_by_handle_at",
    "open_tree", "open_tree_attr", "perf_event_open", "pidfd_getfd", "userfaultfd",
}  # fmt: skip


def call(nr: int, *args: int) -> tuple[int, int]:
    """(result, errno) of the raw syscall; every argument passed as a full 64-bit long."""
    ctypes.set_errno(0)
    res = libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    return int(res), ctypes.get_errno() if res == -1 else 0


def answer(nr: int, *args: int, makes_fd: bool = False) -> str:
    res, err = call(nr, *args)
    if res == -1:
        return errno.errorcode.get(err, str(err))
    if makes_fd and res >= 0:
        os.close(res)
    return "ok"


def has_controlling_tty() -> bool:
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


def denied() -> dict[str, str]:
    out = {}
    for name, nr in sorted({**DENIED, **ENOSYS}.items()):
        if name == "vhangup" and has_controlling_tty():
            out[name] = "not tried: this process has a controlling terminal"
        elif name == "clone3":
            out[name] = answer(nr, 0, 0)  # EINVAL from the kernel: size 0
        elif name not in ARGS:
            out[name] = "not tried: no harmless arguments known (add them to ARGS)"
        else:
            out[name] = answer(nr, *ARGS[name], makes_fd=name in MAKES_FD)
    return out


def clone() -> dict[str, str]:
    # CLONE_THREAD without CLONE_SIGHAND is EINVAL before anything is created, so an allowed
    # call shows as EINVAL and a refused one as EPERM; "none" shows clone itself passes.
    out = {"none": answer(NR["clone"], CLONE_THREAD, 0, 0, 0, 0)}
    for name, flag in CLONE_NAMESPACES.items():
        out[name] = answer(NR["clone"], flag | CLONE_THREAD, 0, 0, 0, 0)
    return out


PERSONAS = (
    0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF,  # Docker's allowed values
    0x0040000,  # ADDR_NO_RANDOMIZE: ASLR off for what this process executes
    0x0400000,  # READ_IMPLIES_EXEC
    0x0100000,  # MMAP_PAGE_ZERO
    0x0200000, 0x0800000, 0x8000000, 0x1, 0x20028, 0xFFFFFFF7, 0xFFFDFFFF, 0x7FFFFFFF,
    0x1_0004_0000,  # the kernel reads an unsigned int: this is ADDR_NO_RANDOMIZE
    0x1_0000_0000,  # ... and this is PER_LINUX, still refused: no upper bits at all
)  # fmt: skip


def personality() -> dict[str, str]:
    nr = NR["personality"]
    before, _ = call(nr, 0xFFFFFFFF)
    out = {}
    for value in PERSONAS:
        out[hex(value)] = answer(nr, value)
        call(nr, before)  # put back whatever an allowed call set
    return out


def sockets() -> dict[str, str]:
    # Creating a socket changes nothing; it is closed at once.
    out = {"AF_UNIX": answer(NR["socket"], 1, 1, 0, makes_fd=True)}
    for name, family in SOCKET_REFUSED_FAMILIES.items():
        out[name] = answer(NR["socket"], family, 5 if name == "AF_ALG" else 1, 0, makes_fd=True)
        # The kernel reads the family as an int: upper bits must not let it through.
        out[name + "+2**32"] = answer(NR["socket"], 1 << 32 | family, 1, 0, makes_fd=True)
    return out


# i386 io_uring_setup(0, NULL) through int 0x80: push rbx; xor ebx, ebx; xor ecx, ecx;
# mov eax, 425; int 0x80; pop rbx; ret. Without a filter it answers -EFAULT.
INT80_IO_URING_SETUP = bytes.fromhex("5331db31c9b8a9010000cd805bc3")
X32_SYSCALL_BIT = 0x40000000


def _in_child(attempt: str) -> str:
    """Run one foreign-ABI attempt in a child; how the child ended is the answer."""
    pid = os.fork()
    if pid == 0:
        # A filter's kill is SIGSYS, which dumps core by default: no core (nor a core_pattern
        # helper on the host) for the attempt.
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if attempt == "int80":
            page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | 4)
            page.write(INT80_IO_URING_SETUP)
            address = ctypes.addressof(ctypes.c_char.from_buffer(page))
            ctypes.CFUNCTYPE(ctypes.c_int)(address)()
        else:
            call(X32_SYSCALL_BIT | DENIED["io_uring_setup"], 0, 0)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "killed:" + signal.Signals(os.WTERMSIG(status)).name
    return f"exit:{os.WEXITSTATUS(status)}"


def syscalls() -> dict[str, object]:
    return {
        "denied": denied(),
        "clone": clone(),
        "personality": personality(),
        "socket": sockets(),
        "foreign_abi": {"int80": _in_child("int80"), "x32": _in_child("x32")},
        # Past the end of the table, and between its runs: ENOSYS, not a kill, not EPERM.
        "unknown": {str(nr): answer(nr) for nr in (337, 400, 423, 471, 600, 1000)},
    }


# -- paths -----------------------------------------------------------------------------------


def _error(err: OSError) -> str:
    return errno.errorcode.get(err.errno or 0, str(err))


def masked(path: str) -> str:
    """'absent', 'empty' or an errno name when hidden; 'readable: ...' when not."""
    if not os.path.lexists(path):
        return "absent"
    try:
        if os.path.isdir(path):
            found = os.listdir(path)
            return f"readable: {sorted(found)[:5]}" if found else "empty"
        with open(path, "rb") as f:
            os.set_blocking(f.fileno(), False)  # /proc/kmsg, if not masked, would block
            data = f.read(256)
    except OSError as err:
        return _error(err)
    return f"readable: {data[:60]!r}" if data else "empty"


def _first_file(top: str) -> str | None:
    for root, _, files in os.walk(top):
        if files:
            return os.path.join(root, sorted(files)[0])
    return None


def read_only(path: str) -> dict[str, object]:
    """The mount's read-only flag, and what opening a file there for writing answers (the
    file is never written: opening is enough to tell EROFS)."""
    if not os.path.lexists(path):
        return {"absent": True}
    target = path if not os.path.isdir(path) else _first_file(path)
    out: dict[str, object] = {"ro_mount": bool(os.statvfs(path).f_flag & os.ST_RDONLY)}
    if target is not None:
        try:
            os.close(os.open(target, os.O_WRONLY))
            out["open_for_write"] = f"ok ({target})"
        except OSError as err:
            out["open_for_write"] = _error(err)
    return out


MNT_DETACH = 2
MS_RDONLY, MS_REMOUNT, MS_BIND = 0x1, 0x20, 0x1000


def _mount(source: str | None, target: str, fstype: str | None, flags: int) -> str:
    enc = [None if s is None else s.encode() for s in (source, target, fstype)]
    if libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), None) == 0:
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), "?")


def undo(masked_paths: list[str], read_only_paths: list[str]) -> dict[str, str]:
    """A root service's ways to get at what is hidden: unmount the mask, remount the read-only
    path writable, or mount a fresh procfs or sysfs that has neither."""
    out = {}
    for path in masked_paths:
        if os.path.lexists(path):
            res = libc.umount2(path.encode(), MNT_DETACH)
            out["umount " + path] = "ok" if res == 0 else errno.errorcode[ctypes.get_errno()]
    for path in read_only_paths:
        if os.path.isdir(path):
            out["remount rw " + path] = _mount(None, path, None, MS_REMOUNT | MS_BIND)
    os.makedirs("/tmp/fresh", exist_ok=True)
    out["mount proc"] = _mount("proc", "/tmp/fresh", "proc", 0)
    out["mount sysfs"] = _mount("sysfs", "/tmp/fresh", "sysfs", 0)
    return out


def paths(masked_paths: list[str], read_only_paths: list[str], aliases: list[str]) -> object:
    attempts = undo(masked_paths, read_only_paths)
    # Read after the attempts: whatever they did, the paths must still be hidden.
    return {
        "masked": {p: masked(p) for p in masked_paths + aliases},
        "read_only": {p: read_only(p) for p in read_only_paths},
        "undo": attempts,
    }


def main() -> None:
    if sys.argv[1] == "syscalls":
        result: object = syscalls()
    else:
        spec = json.loads(sys.argv[2])
        result = paths(spec["masked"], spec["read_only"], spec["aliases"])
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
