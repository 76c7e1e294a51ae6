"""`sandboxd`: flags, logging, the event loop, signals and sd_notify around the reconciler.

Foreground, one asyncio loop (and two writer threads: engine/logwriter.py for service output,
engine/statewriter.py for state records). SIGHUP reloads;
SIGTERM/SIGINT stop every unit (stop_signal, stop_timeout, then SIGKILL to the cgroup) and
exit 0 — or, with `on_exit = "leave"`, leave them running for the next daemon to re-adopt,
and the process exits as soon as `daemon.stopped` is logged (exit_now). A top-level error is
one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import sdnotify

from supervisor import __version__, cgroups, daemondirs, gcpolicy, log
from supervisor.api import server as api_server
from supervisor.api.metrics import Metrics
from supervisor.config import DEFAULT_CONFIG_PATH, DaemonConfig, load_config
from supervisor.engine import logwriter, restarttrace, statewriter
from supervisor.engine.idranges import IdRanges
from supervisor.engine.launchslots import LaunchSlots, default_limit
from supervisor.engine.reconciler import Reconciler
from supervisor.engine.run import Host
from supervisor.engine.store import Store
from supervisor.errors import SupervisorError
from supervisor.images.store import STORE_DIR
from supervisor.linux import fdlimit, heap, helduserns, journal
from supervisor.linux.journal import JournalSocket
from supervisor.linux.syscalls import PR_SET_CHILD_SUBREAPER, REAL
from supervisor.log import LOG_FORMATS
from supervisor.sandbox.host.adapters import SandboxLauncher, SandboxNetwork
from supervisor.sandbox.host.forkserver import ForkServer
from supervisor.sandbox.host.imagefetch import HelperStore
from supervisor.sandbox.host.prober import ForkServerProber
from supervisor.unit import credentials
from supervisor.unit.loader import UnitLoader

if TYPE_CHECKING:  # imported by _cluster_agent, with a [cluster] only
    from supervisor.cluster.agent import Agent

logger = log.get_logger()
SAVE_RETRY_SECONDS = 2.0
_FLUSH_TIMEOUT = 5.0  # seconds an exiting daemon waits for each writer thread
COMPACT_DELAY = 1.0  # seconds after a reload before a collector compaction it made due
IDLE_SETTLE_DELAY = 1.0  # seconds without a launch before the collector's settle (tune_gc)


DESCRIPTION = """\
Declarative sandbox supervisor: runs each unit file of units_dir as PID 1 of fresh
namespaces under cgroup limits. Runs in the foreground and logs to stderr; SIGHUP
reloads the units, SIGTERM or SIGINT stops them (on_exit) and exits."""
EPILOG = """\
A flag overrides the same key of the config file; a key in neither has its default.

EXAMPLE:
  sandboxd --units-dir ./units --state-dir /tmp/sbx --log-format console
"""


def build_parser() -> argparse.ArgumentParser:
    """sandboxd's flags. Each path flag overrides its key in the config file; the `help=` texts
    are also what the man page and shell completions are generated from."""
    p = argparse.ArgumentParser(
        prog="sandboxd",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"sandboxd {__version__}")
    p.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help=f"the daemon config file (default {DEFAULT_CONFIG_PATH}; missing there means all"
        " defaults, a file named here must exist)",
    )
    p.add_argument(
        "--units-dir", type=Path, metavar="DIR", help="the unit files, *.toml (key units_dir)"
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="runtime state for re-adopting services after a daemon restart (key state_dir)",
    )
    p.add_argument(
        "--socket",
        type=Path,
        metavar="PATH",
        help="the control socket (key socket; default <state-dir>/control.sock)",
    )
    p.add_argument(
        "--log-dir",
        type=Path,
        metavar="DIR",
        help="where service output goes, <unit>.log and its rotated files (key log_dir)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="overlay upper layers, image layers and IP leases (key data_dir)",
    )
    p.add_argument(
        "--cgroup-parent",
        metavar="NAME",
        help="the cgroup unit cgroups are made under (key cgroup_parent)",
    )
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="the daemon's own log on stderr: json lines, console text, or auto (console on a"
        " terminal, else json); key log_format",
    )
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


class Notifier:
    """sd_notify, a no-op without NOTIFY_SOCKET."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._sd = sdnotify.SystemdNotifier() if self.enabled else None

    def send(self, *lines: str) -> None:
        if self._sd is not None:
            self._sd.notify("\n".join(lines))

    def watchdog_interval(self) -> float | None:
        """Half of WATCHDOG_USEC, if the watchdog is meant for this process."""
        usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
        if not self.enabled or not usec or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 2e6


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _prepare_host(config: DaemonConfig) -> None:
    # Every mode the daemon asks for is then the mode it gets, and its children (PID 1's mount
    # points, the services) start from the usual 022 whoever started the daemon: under 077
    # a sandbox's /etc would be unreadable to non-root services, under 000 world-writable.
    os.umask(0o022)
    # Sandbox PID 1s are grandchildren (the launcher forks them and exits): as a subreaper the
    # daemon becomes their parent and gets their exit status.
    REAL.prctl(PR_SET_CHILD_SUBREAPER, 1)
    # Per unit: a pidfd, the output pipe, the log file, OOM watch fds. Services get their own
    # soft limit from the launcher.
    soft, hard = fdlimit.raise_soft_limit()
    # Said once, so that a `launch-error:resources: too many open files` can be read against
    # the limit the daemon really had (systemd's LimitNOFILE=, or the shell's ulimit -Hn).
    logger.info("daemon.nofile", limit=hard, was=soft)
    daemondirs.prepare(config)  # before anything is written in them
    credentials.use_key(credentials.daemon_key(config.data_dir))  # before any unit is loaded


async def _retry_saves(store: Store) -> None:
    # A state record that a full or failing state disk refused is written once it can be
    # (store.py): a unit whose state does not change again would otherwise never catch up.
    while True:
        await asyncio.sleep(SAVE_RETRY_SECONDS)
        store.retry()


async def _watchdog(notifier: Notifier, interval: float, summary: Callable[[], str]) -> None:
    while True:
        notifier.send("WATCHDOG=1", f"STATUS={summary()}")
        await asyncio.sleep(interval)


async def serve(config: DaemonConfig) -> None:
    loop = asyncio.get_running_loop()
    config = daemondirs.absolute(config)
    _prepare_host(config)
    manager = cgroups.new(config.cgroup_parent)
    store = Store(config.state_dir)
    store.prepare()
    notifier = Notifier()
    commands: asyncio.Queue[str] = asyncio.Queue()
    for signum, command in ((signal.SIGTERM, "stop"), (signal.SIGINT, "stop"),
                            (signal.SIGHUP, "reload")):  # fmt: skip
        loop.add_signal_handler(signum, commands.put_nowait, command)
    logger.info("daemon.starting", pid=os.getpid(), cgroup_version=manager.version,
                units_dir=str(config.units_dir), state_dir=str(config.state_dir))  # fmt: skip
    # Launchers and exec probes are forked by a small helper process, not by this (large)
    # daemon; sandbox PID 1s still re-parent to the daemon (supervisor/sandbox/host/forkserver.py).
    held_userns = config.state_dir / daemondirs.USERNS_DIR
    # Without a holder we could drop files from, no launch may join a held namespace.
    holder = _userns_holder(held_userns)
    userns_dir = None if holder is None else held_userns
    # Its launchers look their ranges' namespaces up through the holder's root, kept here.
    fork_server = ForkServer.start(holder=None if holder is None else holder.shared())
    try:
        network = SandboxNetwork(config)  # pyroute2 loads at the first bridge-mode use
        traced = restarttrace.enabled()  # the bench's restart breakdown
        launcher = SandboxLauncher(
            config.data_dir, network, fork_server, userns_dir, trace=traced,
            etc_dir=config.state_dir / daemondirs.ETC_DIR,
        )  # fmt: skip
        host = Host(
            loop, manager, launcher, ForkServerProber(loop, fork_server),
            images=HelperStore(str(config.data_dir / STORE_DIR)),
            output=config.output, journal=JournalSocket(daemon_unit=journal.own_unit()),
            id_ranges=IdRanges(config.data_dir, config.pool, config.subids(), holder),
            launch_slots=LaunchSlots(default_limit(os.cpu_count())), trace_restarts=traced,
        )  # fmt: skip
        reconciler = Reconciler(config, host, UnitLoader(watch=True), store, network=network)
        await _run(config, reconciler, notifier, commands)
    finally:
        fork_server.close()
    logger.info("daemon.stopped")


async def _run(
    config: DaemonConfig, reconciler: Reconciler, notifier: Notifier, commands: asyncio.Queue[str]
) -> None:
    loop = asyncio.get_running_loop()
    metrics = Metrics()
    reconciler.reload_observers.append(metrics.observe_reconcile)
    reconciler.timing_observers.append(metrics.observe_timing)
    tune_gc(reconciler)
    agent = _cluster_agent(config, reconciler)
    if agent is not None:
        agent.reachability_observers.append(metrics.observe_cluster)
    async with reconciler:
        await reconciler.resume()
        await reconciler.reload()
        api = await api_server.serve(reconciler, config, metrics=metrics)
        notifier.send("READY=1", f"STATUS={reconciler.summary()}")
        logger.info("daemon.ready", summary=reconciler.summary())
        background = [loop.create_task(_retry_saves(reconciler.store))]
        if agent is not None:
            background.append(loop.create_task(agent.run(), name="cluster"))
        interval = notifier.watchdog_interval()
        if interval:
            background.append(loop.create_task(_watchdog(notifier, interval, reconciler.summary)))
        while await commands.get() == "reload":
            notifier.send("RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}")
            await reconciler.reload()
            notifier.send("READY=1", f"STATUS={reconciler.summary()}")
        leave = config.on_exit == "leave"
        what = "leaving units running" if leave else "stopping units"
        notifier.send("STOPPING=1", f"STATUS=stopping, {what}")
        logger.info("daemon.stopping", on_exit=config.on_exit)
        for task in background:
            task.cancel()
        await api.close()
        if agent is not None:
            await asyncio.wait(background)
            await agent.close()
        await reconciler.shutdown(leave=leave)
        if not leave and reconciler.host.id_ranges is not None:
            # Every sandbox has ended: nothing runs in a held user namespace any more, and the
            # next daemon's first launch of each range makes its namespace again.
            reconciler.host.id_ranges.drop_held()


def tune_gc(reconciler: Reconciler) -> None:
    """The daemon's collector settings (gcpolicy.py), before its first reload: its thresholds,
    and a settle after every reload (the first loads every unit) and once launches have
    stopped for a moment (a start storm's runs, made between reloads, are long-lived too),
    freezing the survivors out of later collections; that last one also gives the C heap's
    free pages back to the kernel (heap.trim).
    A compaction a settle makes due (a full collection: hundreds of ms at 5000 units) runs a
    moment later, not before the reload's answer (or the next step of whoever reloaded) goes
    out; the first, after the daemon's first load, runs at once: the units' runs are not
    launched yet (their tasks start when the loop next turns), so it holds up no start storm
    and no status request in the middle of one."""
    gcpolicy.configure()
    loop = reconciler.host.loop
    due: list[asyncio.TimerHandle] = []  # the compaction scheduled, if any
    idle: list[asyncio.TimerHandle] = []  # the settle after the launches, if scheduled
    first = [True]

    def compact() -> None:
        due.clear()
        gcpolicy.compact()

    def settle() -> None:
        if not gcpolicy.settle() or due:
            return
        if first[0]:
            compact()
        else:
            due.append(loop.call_later(COMPACT_DELAY, compact))

    def after_reload(_seconds: float) -> None:
        settle()
        first[0] = False

    def after_launches() -> None:
        idle.clear()
        slots = reconciler.host.launch_slots
        if slots is None or slots.in_flight == 0:
            settle()
            # The storm's temporaries (plans, messages) were freed below its runs' objects:
            # their pages go back to the kernel now, not at the next compaction (linux/heap.py).
            heap.trim()

    def launches_stopped() -> None:
        if not idle:
            idle.append(loop.call_later(IDLE_SETTLE_DELAY, after_launches))

    reconciler.reload_observers.append(after_reload)
    if reconciler.host.launch_slots is not None:
        reconciler.host.launch_slots.idle_observers.append(launches_stopped)


def _userns_holder(directory: Path) -> helduserns.Holder | None:
    """The holder of the units' user namespaces (linux/helduserns.py), made or found again;
    None if neither works (each launch then makes its own namespace)."""
    dropped = helduserns.drop_legacy(str(directory))
    if dropped:  # an older daemon's, bound into the host's table: remade in the holder
        logger.info("daemon.userns_legacy_dropped", files=len(dropped))
    try:
        return helduserns.Holder.open(str(directory))
    except OSError as exc:
        logger.error("daemon.userns_holder_failed", path=str(directory), error=str(exc))
        return None


def _cluster_agent(config: DaemonConfig, reconciler: Reconciler) -> Agent | None:
    """With `[cluster]`: the etcd keys as a source of units beside the directory, and the
    units' status reported back on every change (supervisor/cluster/)."""
    if config.cluster is None:
        return None
    # Here, not at the top: the etcd client and its key codec stay out of a daemon without a
    # cluster (~150 KB of its heap for good; tests/unit/test_daemon_imports.py).
    from supervisor.cluster.agent import Agent  # noqa: PLC0415

    agent = Agent(config.cluster, reconciler.reload, reconciler.reported)
    reconciler.sources.append(agent.desired)
    reconciler.change_observers.append(agent.changed)
    reconciler.reload_observers.append(lambda _seconds: agent.changed())
    return agent


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    overrides: dict[str, Any] = {
        "units_dir": args.units_dir, "state_dir": args.state_dir, "socket": args.socket,
        "log_dir": args.log_dir, "data_dir": args.data_dir,
        "cgroup_parent": args.cgroup_parent, "log_format": args.log_format,
    }  # fmt: skip
    try:
        config = load_config(args.config, overrides)
        log.configure(config.log_format)
        asyncio.run(serve(config))
        # The last state records (each unit's final state, or the run left for the next daemon),
        # on the state writer thread; not waited for past a few seconds: on a stalled state dir
        # the previous records stay whole, and the next daemon goes by them and by the units'
        # cgroups (engine/store.py).
        if not statewriter.WRITER.flush(timeout=_FLUSH_TIMEOUT):
            logger.warning("daemon.state_unflushed", timeout=_FLUSH_TIMEOUT,
                           waiting=statewriter.WRITER.pending())  # fmt: skip
        # The last runs' output, drained by the writer thread; not waited for past a few
        # seconds, since a stalled log filesystem may never return (the bytes it has not taken
        # are still in the services' pipes, for the next daemon).
        if not logwriter.WRITER.flush(timeout=_FLUSH_TIMEOUT):
            logger.warning("daemon.output_unflushed", timeout=_FLUSH_TIMEOUT)
    except (SupervisorError, OSError) as exc:
        _fatal(str(exc))
    except Exception as exc:  # a bug (e.g. from a runner task): the traceback, then one line
        logger.exception("daemon.crashed")
        _fatal(f"internal error: {type(exc).__name__}: {exc}")
    exit_now(0)


def exit_now(code: int) -> NoReturn:
    """Exit without tearing the interpreter down. By now every unit is stopped (or left for the
    next daemon), the fork server reaped and the socket removed; what `sys.exit` would still do
    is free every object of every module (pydantic, aiohttp, structlog...) one by one: 0.1 s of
    CPU on an idle host, seconds on a loaded one, during which the process lingered after
    `daemon.stopped` and `systemctl stop` or a script waiting for it waited too. No atexit
    handler has work left at this point, and the writer threads have none either (or are
    stuck on a stalled filesystem and given up on, see main); buffered output is flushed here."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream
            stream.flush()
    os._exit(code)


def _fatal(message: str) -> None:
    print(f"sandboxd: {message}", file=sys.stderr)
    sys.exit(1)
