"""`sandboxctl status [UNIT...] [--json]`: the table, or one unit in detail."""

from __future__ import annotations

import sys

from supervisor.cli import jsonwrite, names, render, simple, verbs
from supervisor.cli.client import Client, error, exits
from supervisor.errors import EXIT_NO_SUCH_UNIT, EXIT_NOT_RUNNING, EXIT_OK

TYPE_CHECKING = False  # typing stays unimported on the client path (cli/__init__.py)
if TYPE_CHECKING:
    import argparse
    import datetime as dt
    from typing import Any

HELP = verbs.HELP["status"]
EPILOG = """\
exit status: 0; 3 if a named unit is not running; 4 if a named unit does not exist

EXAMPLE:
  sandboxctl status               # every unit, one line each
  sandboxctl status web           # one unit: limits, usage, OOM kills, recent events
  sandboxctl status --json | jq '.units[] | select(.state != "running") | .name'
"""
HEADER = ("UNIT", "STATE", "PID", "UPTIME", "RESTARTS", "MEMORY", "LAST-EXIT")
# A launch error can run to a paragraph; the table keeps one line per unit (the full text is in
# `status UNIT` and --json).
LAST_EXIT_WIDTH = 40
BROKEN = "*"  # after the state: the unit file is invalid, the last valid version runs
BROKEN_HINT = (
    f"{BROKEN} unit file invalid, running the last valid version: "
    "see sandboxctl status UNIT / sandboxctl validate"
)


SIMPLE = simple.Spec("units", "*", flags={"--json": ("json", True)})


def register(subparsers: Any) -> None:
    import argparse  # noqa: PLC0415  (argparse is loaded already when a parser is built)

    p = subparsers.add_parser(
        "status",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("units", nargs="*", metavar="UNIT", help="only these units")
    p.add_argument("--json", action="store_true", help='print {"units": [...]} (stable keys)')
    p.set_defaults(run=run)


RUNNING = names.RUNNING


def uptime(unit: dict[str, Any], now: dt.datetime | None) -> float | None:
    """The daemon's monotonic `uptime`; from `started_at` only for an older daemon (that one
    moves when the wall clock is stepped). `now` None: the clock is read if it is needed (the
    datetime module is imported only then: a daemon that says `uptime` never needs it)."""
    up = unit.get("uptime")
    if up.__class__ is float or (isinstance(up, int) and not isinstance(up, bool)):
        return float(up)
    if not unit.get("started_at"):
        return None
    return render.since(unit["started_at"], now or render.utc_now())


def row(unit: dict[str, Any], now: dt.datetime | None) -> list[str]:
    state, last_exit = unit["state"], unit.get("last_exit")
    return [
        unit["name"],
        state + BROKEN if unit.get("file_invalid") else state,
        str(unit["pid"]) if unit.get("pid") else "-",
        render.duration(uptime(unit, now)) if state == RUNNING else "-",
        str(unit.get("restarts", 0)),
        render.size(unit.get("memory_bytes")),
        render.clip(render.safe(last_exit), LAST_EXIT_WIDTH) if last_exit else "-",
    ]


def print_table(units: list[dict[str, Any]]) -> None:
    color = render.use_color(sys.stdout)
    rows = [row(u, None) for u in units]
    colors = [render.STATE_COLORS.get(u["state"]) for u in units]
    lines = render.table(HEADER, rows, colors, color)
    if any(u.get("file_invalid") for u in units):
        lines.append(BROKEN_HINT)
    sys.stdout.write("\n".join(lines) + "\n")


def _limit(key: str, value: Any) -> str:
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and ("memory" in key or "swap" in key)
    ):
        return render.size(value)
    return str(value)


def _network(network: dict[str, Any] | None) -> str | None:
    """`bridge 10.88.0.2/16 (mac ..., bridge sbx0, gateway 10.88.0.1), ports 8080:80/tcp`
    (`, no outbound` if it may not reach out); the mode alone for the others."""
    if not network:
        return None
    mode = network.get("mode")
    if mode != "bridge":
        return str(mode)
    if not network.get("address"):
        text = f"bridge (no address leased yet; bridge {network.get('bridge')})"
    else:
        six = f" {network['address6']}" if network.get("address6") else ""
        gateway6 = f", gateway6 {network['gateway6']}" if network.get("address6") else ""
        text = (
            f"bridge {network['address']}{six} (mac {network.get('mac')}, "
            f"bridge {network.get('bridge')}, gateway {network.get('gateway')}{gateway6})"
        )
    if network.get("outbound") is False:
        text += ", no outbound"
    if ports := network.get("ports"):
        text += ", ports " + ", ".join(str(p) for p in ports)
    return text


def _image(image: dict[str, Any] | None) -> str | None:
    if not image:
        return None
    ports = ", ".join(image.get("exposed_ports") or [])
    exposes = f"; exposes {ports}" if ports else ""
    layers = len(image.get("layers") or [])
    return f"{image['ref']} ({image['digest'][:19]}…, {layers} layers{exposes})"


def _dependency_lines(unit: dict[str, Any]) -> list[str]:
    """What the unit names and, the other way, which units name it ("required by: web")."""
    keys = ("requires", "wants", "after", "required_by", "wanted_by", "before")
    named = [(key.replace("_", " ") + ":", ", ".join(unit[key])) for key in keys if unit.get(key)]
    return [f"  {label:<14}{names}" for label, names in named]


def usage_text(memory: int | None, usage: dict[str, Any]) -> str:
    parts = []
    if memory is not None:
        parts.append(f"memory {render.size(memory)}")
    if usage.get("memory_peak_bytes") is not None:
        parts.append(f"peak {render.size(usage['memory_peak_bytes'])}")
    if usage.get("cpu_usage_usec") is not None:
        parts.append(f"cpu {render.duration(usage['cpu_usage_usec'] / 1e6)}")
    if usage.get("pids") is not None:
        parts.append(f"pids {usage['pids']}")
    if usage.get("io_read_bytes") is not None:
        parts.append(f"read {render.size(usage['io_read_bytes'])}")
    if usage.get("io_write_bytes") is not None:
        parts.append(f"written {render.size(usage['io_write_bytes'])}")
    return ", ".join(parts)


PSI_ABSENT = "not measured (no PSI: cgroup v1, or a kernel without it)"


def pressure_lines(pressure: dict[str, Any] | None) -> list[str]:
    """PSI as `status UNIT` shows it: per resource, some and full as avg10/avg60 % and the
    time stalled in all. Absent says so: zeros would read as a measured calm."""
    if not pressure:
        return [f"  {'pressure:':<14}{PSI_ABSENT}"]
    lines = [f"  {'pressure:':<14}avg10/avg60 % of time stalled, and in all"]
    for resource in ("cpu", "memory", "io"):
        kinds = pressure.get(resource)
        if not kinds:
            continue
        parts = []
        for kind in ("some", "full"):
            line = kinds.get(kind)
            if line:
                total = render.duration(line["total"] / 1e6)
                parts.append(f"{kind} {line['avg10']:.2f}/{line['avg60']:.2f} {total}")
        lines.append(f"    {resource:<10}  " + "   ".join(parts))
    return lines


def detail_lines(unit: dict[str, Any], now: dt.datetime | None, color: bool) -> list[str]:
    state = unit["state"]
    lines = [f"{unit['name']}: {render.paint(state, render.STATE_COLORS.get(state), color)}"]

    def field(label: str, value: object) -> None:
        if value not in (None, "", [], {}):
            lines.append(f"  {label + ':':<14}{value}")

    field("pid", unit.get("pid"))
    if unit.get("started_at"):
        up = uptime(unit, now) if state == RUNNING else None
        field("started", unit["started_at"] + (f" (up {render.duration(up)})" if up else ""))
    field("health", unit.get("health"))
    field("restarts", unit.get("restarts"))
    field("last exit", unit.get("last_exit"))
    field("recent exits", ", ".join(unit.get("recent_exits") or []))
    limits = unit.get("limits") or {}
    if unit.get("oom_kills"):
        cap = limits.get("memory_max")
        field("oom kills", f"{unit['oom_kills']}" + (f" (memory_max {_limit('memory', cap)})"
                                                     if cap is not None else ""))  # fmt: skip
    else:
        field("oom kills", 0)
    if state == names.BACKOFF and unit.get("next_start_in") is not None:
        # The exit it restarts after; `error` says the same as a sentence ("restart in 4s
        # after ...") and would read twice here.
        why = unit.get("last_exit") or unit.get("error") or "the last run failed"
        field("next start", f"in {render.duration(unit['next_start_in'])} (after {why})")
    elif unit.get("error"):
        field("error", unit["error"])
    lines.extend(_dependency_lines(unit))
    field("template", unit.get("template"))
    field("drop-ins", ", ".join(unit.get("dropins") or []))
    field("limits", " ".join(f"{k}={_limit(k, v)}" for k, v in limits.items() if v is not None))
    usage = unit.get("usage") or {}
    field("usage", usage_text(unit.get("memory_bytes"), usage))
    if usage:
        lines.extend(pressure_lines(usage.get("pressure")))
    field("network", _network(unit.get("network")))
    field("image", _image(unit.get("image")))
    if unit.get("output") not in (None, "file"):
        field("output", f"{unit['output']} (journalctl SANDBOXD_UNIT={unit['name']})")
    field("userns", unit.get("userns"))
    if unit.get("output_dropped_bytes"):
        field("output lost", f"{render.size(unit['output_dropped_bytes'])} dropped: the log "
              "file or the journal took no more (see the daemon's unit.output_dropping or "
              "unit.journal_dropping warning)")  # fmt: skip
    events = unit.get("recent_events") or []
    if events:
        lines.append("  recent events:")
        for event in events[-10:]:
            extra = " ".join(f"{k}={v}" for k, v in (event.get("detail") or {}).items())
            lines.append(
                f"    {event['at']}  {event['event']:<10} {event['state']} {extra}".rstrip()
            )
    return lines


@exits
def run(args: argparse.Namespace) -> int:
    client = Client()
    names: list[str] = args.units
    answer: bytes | None = None  # the daemon's text of exactly what --json prints
    if len(names) == 1:
        units = [client.unit(names[0])]
    else:
        units, answer = client.units_answer()
        if names:
            answer = None
            by_name = {u["name"]: u for u in units}
            missing = [n for n in names if n not in by_name]
            for name in missing:
                error(f"no such unit: {name}")
            if missing:
                return EXIT_NO_SUCH_UNIT
            units = [by_name[n] for n in dict.fromkeys(names)]
    if args.json and answer is not None and not sys.stdout.isatty():
        # One line for pipes: the daemon's answer is that line (json.dumps of the same
        # {"units": [...]}), printed as it came rather than encoded again (the json package
        # and its encoding were ~8 ms of 1000 units).
        sys.stdout.write(answer.decode() + "\n")
    elif args.json and not sys.stdout.isatty():
        # One line for pipes (the C encoder: 1000 units in a few ms).
        sys.stdout.write(jsonwrite.dumps({"units": units}) + "\n")
    elif args.json:
        import json  # noqa: PLC0415  (indented for people: the json package, with re, ~5 ms)

        sys.stdout.write(json.dumps({"units": units}, indent=2) + "\n")
    elif len(names) == 1:
        color = render.use_color(sys.stdout)
        lines = (render.safe(line) for line in detail_lines(units[0], None, color))
        sys.stdout.write("\n".join(lines) + "\n")
    else:
        print_table(units)
    if names and any(u["state"] != RUNNING for u in units):
        return EXIT_NOT_RUNNING
    return EXIT_OK
