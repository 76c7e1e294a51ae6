"""Checks beyond one file's schema: host checks (warnings) and cross-unit checks (errors).

Host checks look at this machine: `sandboxctl validate` runs offline, possibly on another host
than the one that will run the unit, so a missing binary or root directory is a warning, never an
error; the launcher reports the real failure as `launch-error:` if it is still missing then.
Each check is a small function in HOST_CHECKS, in the spirit of runc's validator list. In a
root directory, paths are resolved as the sandbox will see them (`safefs.resolve_in_root`): the
rootfs's symlinks are followed inside it, never out to the host's files, so a warning is about
that rootfs and not about this machine. The daemon logs the same warnings at every reload.

A host path the sandbox mounts (bind source, root directory, device) must not go through a
symlink anywhere: the launcher refuses to follow one (sandbox/child/rootfs.py), because a
sandbox that can write a shared directory could otherwise point a neighbour's mount at /etc.
Validation names the link ahead of time, as a warning like the others (the launch is what
enforces it).

Cross-unit checks need every unit of the directory: `after`, `requires` and `wants` must name a
unit file that exists and must not form a cycle together (nothing in a cycle could ever start:
each of the three orders a start), and no two bridge units may
publish the same host port. All are errors, and so is a published port a host process already
listens on (`listener_conflicts`): that one would break a program that runs now. A
`pressure_limit` on a host without per-cgroup pressure files (`pressure_unsupported`) is an
error too: the unit would run without the guard it asks for.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping

from supervisor.cgroups import cpuset, detect_version, devices
from supervisor.errors import CgroupError
from supervisor.linux import listeners, resolvconf, users
from supervisor.linux.safefs import resolve_in_root, symlink_in
from supervisor.unit.diagnostics import UnitError
from supervisor.unit.ports import PublishedPort
from supervisor.unit.spec import UnitSpec

HostCheck = Callable[[UnitSpec], Iterator[UnitError]]


@functools.cache
def _cpu_count() -> int | None:
    # os.cpu_count() reads sysfs on every call; 1000 units x 2 checks showed in the profile.
    return os.cpu_count()


_ETC_FILE_MAX = 1 << 20
# passwd/group texts by host path: a reload runs the host checks of every unit, and 1000 units
# naming a user should cost 1000 fstats, not 1000 reads of the same file.
_FILE_CACHE: dict[str, tuple[tuple[int, int, int, int], str]] = {}


def _root_dir(spec: UnitSpec) -> str | None:
    """The unit's root directory if it has one that exists here (else its own check warns)."""
    root = spec.unit.sandbox.root
    if root == "host" or symlink_in(root) is not None or not os.path.isdir(root):
        return None
    return root


def _sandbox_file(spec: UnitSpec, path: str) -> str | None:
    """The text of `path` as the sandbox will see it, before mounts; None if it is missing.
    In a root directory, symlinks resolve inside it; `root = "host"` copies the host's /etc."""
    root = _root_dir(spec)
    if root is None and spec.unit.sandbox.root != "host":
        return None
    where = path if root is None else resolve_in_root(root, path)
    if where is None:
        return None
    try:
        with open(where, "rb") as f:
            st = os.fstat(f.fileno())
            key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            cached = _FILE_CACHE.get(where)
            if cached is None or cached[0] != key:
                cached = (key, f.read(_ETC_FILE_MAX).decode("utf-8", errors="replace"))
                _FILE_CACHE[where] = cached
            return cached[1]
    except OSError:
        return None


def _mounted(spec: UnitSpec, path: str) -> bool:
    return any(
        path == m.target or path.startswith(m.target.rstrip("/") + "/")
        for m in spec.unit.sandbox.mounts
    )


def _through_symlink(path: str, what: str) -> str | None:
    found = symlink_in(path)
    if found is None:
        return None
    link, target = found
    return (
        f"warning: {link} is a symlink (to {target}), and sandboxd follows none in {what}: "
        f"the unit will fail to start; name the real path"
    )


def check_root(spec: UnitSpec) -> Iterator[UnitError]:
    root = spec.unit.sandbox.root
    if root == "host":
        return
    problem = _through_symlink(root, "a root directory")
    if problem is not None:
        yield UnitError(spec.path, "sandbox.root", problem)
    elif not os.path.isdir(root):
        yield UnitError(
            spec.path, "sandbox.root", f"warning: {root} is not a directory on this host"
        )


def check_exec(spec: UnitSpec) -> Iterator[UnitError]:
    if spec.unit.sandbox.image is not None:
        return  # in the image's layers, which may not be unpacked yet: the launch checks
    argv0 = spec.unit.service.exec[0]
    if _mounted(spec, argv0):
        return  # provided by a mount; the source is checked by check_mount_sources
    if spec.unit.sandbox.root == "host":
        if not os.path.exists(argv0):
            yield UnitError(
                spec.path, "service.exec[0]", f"warning: {argv0} does not exist on this host"
            )
        elif not os.access(argv0, os.X_OK):
            yield UnitError(spec.path, "service.exec[0]", f"warning: {argv0} is not executable")
        return
    root = _root_dir(spec)
    if root is None:
        return  # check_root says why
    # Resolved as the sandbox will: the rootfs's absolute symlinks point into the rootfs.
    where = resolve_in_root(root, argv0)
    problem = None
    if where is None:
        problem = f"{argv0} does not exist in the root directory {root}"
    elif not os.path.isfile(where):
        problem = f"{argv0} is not a regular file in the root directory {root}"
    elif not os.stat(where).st_mode & 0o111:
        problem = f"{argv0} is not executable in the root directory {root}"
    if problem is not None:
        yield UnitError(
            spec.path, "service.exec[0]", f"warning: {problem}: the unit will fail to start"
        )


# Mount points every sandbox gets (sandbox/host/rootplan.py), and the tmpfs among them that
# hold whatever a unit mounts below them.
_MOUNT_POINTS = ("/dev", "/proc", "/run", "/sys", "/tmp")
_OWN_TMPFS = ("/dev", "/run", "/tmp")


def check_writable_root_mount_points(spec: UnitSpec) -> Iterator[UnitError]:
    """A writable root directory (read_only = false, no overlay) must hold its mount points:
    sandboxd creates nothing in a root directory, and the overlay it uses to provide missing
    ones for a read-only root would swallow the service's writes here."""
    sandbox = spec.unit.sandbox
    root = _root_dir(spec)
    if root is None or sandbox.read_only or sandbox.overlay:
        return
    targets = [m.target for m in sandbox.mounts]
    wanted = list(_MOUNT_POINTS)
    for target in targets:
        inside = [t for t in (*_OWN_TMPFS, *targets) if t != target]
        if not any(target.startswith(t.rstrip("/") + "/") for t in inside):
            wanted.append(target)
    missing = [p for p in wanted if not os.path.lexists(os.path.join(root, p.lstrip("/")))]
    if missing:
        yield UnitError(
            spec.path,
            "sandbox.read_only",
            f"warning: {root} lacks {', '.join(missing)}, where the sandbox mounts things, and "
            "sandboxd creates nothing in a root directory: with read_only = false the unit "
            "will fail to start; create them there or set overlay = true",
        )


def check_user(spec: UnitSpec) -> Iterator[UnitError]:
    """`user` and `group` names must be in the sandbox's /etc/passwd and /etc/group, read as
    the launch reads them (numeric ids and root need no entry)."""
    service = spec.unit.service
    if spec.unit.sandbox.image is not None:
        return  # the image's /etc/passwd is in a layer, read at launch
    user, group = service.user, service.group
    names_user = not user.isdigit() and user != "root"
    names_group = group is not None and not group.isdigit()
    if not (names_user or names_group) or _mounted(spec, "/etc/passwd"):
        return
    root = spec.unit.sandbox.root
    if root != "host" and _root_dir(spec) is None:
        return  # check_root says why
    where = "this host's /etc" if root == "host" else f"{root.rstrip('/')}/etc"
    passwd = _sandbox_file(spec, "/etc/passwd")
    if names_user:
        try:
            users.resolve(user, None, passwd or "", "")
        except users.UnknownPrincipal:
            missing = "" if passwd is not None else " (there is no passwd file)"
            yield UnitError(
                spec.path,
                "service.user",
                f"warning: unknown user {user!r}: not in {where}/passwd{missing}: "
                "the unit will fail to start",
            )
            return
    if names_group and group is not None and not _mounted(spec, "/etc/group"):
        group_file = _sandbox_file(spec, "/etc/group")
        if not any(row.split(":")[0] == group for row in (group_file or "").splitlines()):
            missing = "" if group_file is not None else " (there is no group file)"
            yield UnitError(
                spec.path,
                "service.group",
                f"warning: unknown group {group!r}: not in {where}/group{missing}: "
                "the unit will fail to start",
            )


def check_mount_sources(spec: UnitSpec) -> Iterator[UnitError]:
    for index, mount in enumerate(spec.unit.sandbox.mounts):
        source = getattr(mount, "source", None)
        if source is None:
            continue
        key = f"sandbox.mounts[{index}].source"
        problem = _through_symlink(source, "a bind source")
        if problem is not None:
            yield UnitError(spec.path, key, problem)
        elif not os.path.exists(source):
            yield UnitError(spec.path, key, f"warning: {source} does not exist on this host")


def check_devices(spec: UnitSpec) -> Iterator[UnitError]:
    # The same test the cgroup backends apply at start (where it fails the unit): a path that
    # is missing or not a device node here cannot be allowed by major:minor.
    for index, device in enumerate(spec.unit.sandbox.devices):
        key = f"sandbox.devices[{index}].path"
        linked = _through_symlink(device.path, "a device path")
        if linked is not None:
            yield UnitError(spec.path, key, linked)
            continue
        problem = devices.node_problem(device.path)
        if problem is not None:
            yield UnitError(spec.path, key, f"warning: {problem}")


def check_cpus(spec: UnitSpec) -> Iterator[UnitError]:
    # Against the online CPUs and memory nodes, as the cgroup backends check at start: a count
    # would miss gaps such as an offlined CPU 2 of 0-3.
    resources = spec.unit.resources
    for key, value, online, what in (
        ("cpus", resources.cpus, cpuset.ONLINE_CPUS, "CPU"),
        ("mems", resources.mems, cpuset.ONLINE_NODES, "memory node"),
    ):
        if value is None:
            continue
        try:
            cpuset.check(key, value, online, what)
        except CgroupError as exc:
            yield UnitError(spec.path, f"resources.{key}", f"warning: {exc}")


def check_cpu_max(spec: UnitSpec) -> Iterator[UnitError]:
    cpu_max, count = spec.unit.resources.cpu_max, _cpu_count()
    if cpu_max is not None and count is not None and cpu_max > count:
        yield UnitError(
            spec.path,
            "resources.cpu_max",
            f"warning: {cpu_max:g} cores is more than this host's {count}",
        )


def check_dns(spec: UnitSpec) -> Iterator[UnitError]:
    """A bridge unit that takes the host's nameservers gets none if they are all on the
    host's loopback (a local stub or dnsmasq); say so rather than let names fail later."""
    network = spec.unit.network
    sandbox = spec.unit.sandbox
    if network.mode != "bridge" or network.dns or (sandbox.root != "host" and not sandbox.image):
        return
    # Looked up at call time, so tests can point them at files of their own.
    resolved = resolvconf.for_sandbox(
        None, None, host_path=resolvconf.HOST_RESOLV, upstream_path=resolvconf.RESOLVED_UPSTREAM
    )
    if resolved.warning is not None:
        yield UnitError(spec.path, "network.dns", f"warning: {resolved.warning}")


HOST_CHECKS: tuple[HostCheck, ...] = (
    check_root,
    check_exec,
    check_user,
    check_writable_root_mount_points,
    check_mount_sources,
    check_devices,
    check_cpus,
    check_cpu_max,
    check_dns,
)


def host_warnings(spec: UnitSpec) -> list[UnitError]:
    return [warning for check in HOST_CHECKS for warning in check(spec)]


# --- cross-unit checks ------------------------------------------------------------------------


DEPENDENCY_KEYS = ("after", "requires", "wants")


def unknown_after(
    specs: Mapping[str, UnitSpec], known: set[str]
) -> Iterator[tuple[str, list[UnitError]]]:
    """Units whose `after`, `requires` or `wants` names a unit with no file (an invalid file
    still counts as known)."""
    for name, spec in specs.items():
        service = spec.unit.service
        if not (service.after or service.requires or service.wants):
            continue  # most units name none: 5000 of them are a reload's hot loop
        errors = [
            UnitError(spec.path, f"service.{key}[{i}]", f'no unit named "{other}"')
            for key in DEPENDENCY_KEYS
            for i, other in enumerate(getattr(service, key))
            if other not in known
        ]
        if errors:
            yield name, errors


def _components(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan), iterative: a 1000-unit chain must not recurse."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(graph[root]))]
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def _shortest_cycle(graph: Mapping[str, list[str]], start: str, within: set[str]) -> list[str]:
    """start -> ... -> start, by breadth-first search inside one component."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in graph[node]:
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [start, *reversed(path[:-1]), start] if node != start else [start, start]
            if nxt in within and nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    return [start, start]  # unreachable for a real component


def cycles(specs: Mapping[str, UnitSpec]) -> Iterator[tuple[str, list[UnitError]]]:
    """Every unit on a cycle of `after`, `requires` and `wants` edges (each orders a start),
    each with a cycle through it: "a -> b -> a"."""
    # Only a unit that waits for another can be on a cycle: the graph of those alone (most
    # units wait for none, and a reload of 5000 must not walk them).
    waiting = {name: spec.unit.service.starts_after for name, spec in specs.items()
               if spec.unit.service.after or spec.unit.service.requires
               or spec.unit.service.wants}  # fmt: skip
    graph = {
        name: [other for other in after if other in waiting] for name, after in waiting.items()
    }
    for component in _components(graph):
        members = set(component)
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue
        for name in sorted(members):
            cycle = " -> ".join(_shortest_cycle(graph, name, members))
            key = _edge_key(specs[name], _shortest_cycle(graph, name, members)[1])
            yield name, [UnitError(specs[name].path, key, f"dependency cycle: {cycle}")]


def _edge_key(spec: UnitSpec, other: str) -> str:
    """The key whose edge to `other` a cycle error points at: the first that names it."""
    service = spec.unit.service
    key = next(k for k in DEPENDENCY_KEYS if other in getattr(service, k))
    return f"service.{key}"


def port_conflicts(specs: Mapping[str, UnitSpec]) -> Iterator[tuple[str, list[UnitError]]]:
    """Bridge units publishing a port another unit already publishes (same protocol, port
    and a common host address). In name order the first unit keeps the port and each later
    one is refused, naming the unit that has it: a running unit never loses its port to a
    file added beside it."""
    taken: list[tuple[str, PublishedPort]] = []
    for name in sorted(specs):
        network = specs[name].unit.network
        if network.mode != "bridge":
            continue
        errors = []
        for i, port in enumerate(network.ports):
            for other, theirs in taken:
                if port.overlaps(theirs):
                    errors.append(
                        UnitError(
                            specs[name].path,
                            f"network.ports[{i}]",
                            f'{port} conflicts with {theirs} of unit "{other}"',
                        )
                    )
                    break
        if errors:
            yield name, errors
        else:
            taken.extend((name, port) for port in network.ports)


def listener_conflicts(spec: UnitSpec) -> list[UnitError]:
    """Published ports a socket of the host already listens on: the DNAT rule would take its
    traffic away. An error, unlike the host warnings, since starting would break a running
    program; checked only where host checks run (not `validate --offline`)."""
    ports = spec.unit.network.ports if spec.unit.network.mode == "bridge" else []
    if not ports:
        return []
    found = listeners.listening()
    errors = []
    for i, port in enumerate(ports):
        for sock in found:
            probe = PublishedPort(port.protocol, sock.port, sock.port, 1, sock.address)
            if port.overlaps(probe):
                who = listeners.owner(sock.inode) or "a process sandboxd cannot see"
                where = f"{sock.address or '*'}:{sock.port}/{sock.protocol}"
                errors.append(
                    UnitError(spec.path, f"network.ports[{i}]", f"{port}: {who} listens on {where}")
                )
                break
    return errors


# Where the kernel says whether it keeps PSI at all (CONFIG_PSI, not `psi=0`).
PROC_PRESSURE = "/proc/pressure"


def pressure_unsupported(spec: UnitSpec) -> list[UnitError]:
    """A `pressure_limit` this host cannot watch: cgroup v1 keeps no pressure per cgroup, and
    a kernel without PSI none at all. An error where host checks run (the daemon's loads,
    `validate` without `--no-host-checks`): the unit asks to be guarded before the OOM killer
    acts, and running it unguarded would hide that."""
    limit = spec.unit.oom.pressure_limit
    if limit is None:
        return []
    problem = None
    if detect_version() != 2:
        problem = "this host's cgroups are v1, which keep none per cgroup"
    elif not os.path.exists(os.path.join(PROC_PRESSURE, limit.resource)):
        problem = f"this kernel keeps none ({PROC_PRESSURE}/{limit.resource} is missing)"
    if problem is None:
        return []
    return [
        UnitError(
            spec.path, "oom.pressure_limit", f"needs cgroup v2 pressure (PSI) files: {problem}"
        )
    ]


def host_errors(spec: UnitSpec) -> list[UnitError]:
    """What this host refuses outright (errors, unlike `host_warnings`)."""
    return listener_conflicts(spec) + pressure_unsupported(spec)


def concerns(spec: UnitSpec) -> tuple[bool, bool]:
    """(whether a cross-unit check may refuse `spec`: it names another unit, or is a bridge
    unit that may publish a port another publishes; whether `host_errors` may: it publishes
    ports, or has a pressure limit). A unit that neither concerns is never refused by them,
    so a reload of 5000 units runs them on the few that are (loader.py)."""
    service, network = spec.unit.service, spec.unit.network
    across = bool(service.after or service.requires or service.wants) or network.mode == "bridge"
    host = (network.mode == "bridge" and bool(network.ports)) or (
        spec.unit.oom.pressure_limit is not None
    )
    return across, host
